"""Domain adaptation across the four product categories of Blitzer et al.'s
Amazon reviews (books, dvd, electronics, kitchen): the 12 source -> target
pairs, every method beside source-only and the target-supervised upper
bound, with MiniLM-L6 frozen (masked-mean features, computed once a domain
and truncation, cached on disk), fine-tuned as the text recipe does
(`partial:2`), or after masked-LM pretraining on the target pool.

The data is a research set without a licence to ship: pass its folder (four
`<domain>.tsv` files, `review<TAB>label`, 1,600 reviews each).

On each pair and seed the target's reviews are split (stratified, by seed)
into an unlabelled pool of 1,200 and a test set of 400 that no part of
training or selection sees. Settings are chosen without target test labels:
the truncation on source validation (`--stage lengths`); the rest are the
library's defaults. Each stage writes its rows to `--cache` as JSON; the
fine-tuned stage keeps figures an earlier run of it measured.

    .venv/bin/python benchmarks/amazon_domains.py --data ../shared/data/amazon_multi_domain --stage lengths
    .venv/bin/python benchmarks/amazon_domains.py --data ../shared/data/amazon_multi_domain --stage frozen
    .venv/bin/python benchmarks/amazon_domains.py --data ../shared/data/amazon_multi_domain --stage fine-tuned \
        --seeds 1 --methods source_only,self_training,target_supervised
    .venv/bin/python benchmarks/amazon_domains.py --data ../shared/data/amazon_multi_domain --stage pretrained \
        --route fine-tuned --seeds 1 --pairs "electronics>books" --methods source_only,self_training
    .venv/bin/python benchmarks/amazon_domains.py --data ../shared/data/amazon_multi_domain --stage fine-tuned \
        --seeds 1 --pairs "electronics>dvd" --methods dann
"""

import argparse
import itertools
import json
import pathlib
import time

import common  # noqa: F401  (quiet TensorFlow, TensorFlow backend)
import keras
import numpy as np

from tl_keras.core.files import write_atomically
from tl_keras.data.texts import read_labelled_texts
from tl_keras.data.tokens import tokenize
from tl_keras.models.backbones import load_text_backbone, minilm_l6_offline_path
from tl_keras.models.heads import build_encoder
from tl_keras.transfer.domain_adaptation import adapt
from tl_keras.transfer.feature_cache import FeatureCache
from tl_keras.transfer.self_training import self_train_head
from transfer_between_domains import pool_and_test

DOMAINS = ("books", "dvd", "electronics", "kitchen")
LONGEST = 512
# name: (sequence length, head tokens kept from a longer review; the rest are its last tokens)
TRUNCATIONS = {"head 128": (128, 127), "head 256": (256, 255), "head 64 + tail 192": (256, 64),
               "head 512": (512, 511)}


class Features:
    """Each domain's reviews, labels and frozen features for a truncation."""

    def __init__(self, data, cache, backbone=minilm_l6_offline_path()):
        self.cache = FeatureCache(pathlib.Path(cache) / "features")
        backbone, self.preprocessor = load_text_backbone(backbone, LONGEST)
        self.encoder = build_encoder(backbone, "mean")
        self.rows = {name: read_labelled_texts(pathlib.Path(data) / f"{name}.tsv") for name in DOMAINS}
        self.labels = {name: np.array([int(label) for label in rows.labels]) for name, rows in self.rows.items()}
        tokens = pathlib.Path(cache) / "tokens"
        self.tokens = {name: tokenize(rows.texts, self.preprocessor, verbose=0, cache_dir=tokens)
                       for name, rows in self.rows.items()}
        self.seconds = {}

    def __call__(self, truncation, domain):
        length, head = TRUNCATIONS[truncation]
        start = time.perf_counter()
        features = self.cache.features(self.encoder, self.tokens[domain].head_and_tail(length, head), verbose=0)
        self.seconds[truncation, domain] = time.perf_counter() - start
        return features


def split(labels, seed, test_per_class=200):
    """Stratified row indices `(pool, test)` of a target domain by seed."""
    return pool_and_test(labels, seed, test_per_class)


def accuracy(head, features, labels):
    return float(np.mean(head.predict(features, batch_size=256, verbose=0).argmax(-1) == labels))


def choose_truncation(features, seeds):
    """Source-only accuracy on a held-out fifth of each source domain (no
    target data), for every truncation: the truncation is chosen here."""
    scores = {}
    for truncation in TRUNCATIONS:
        for domain, seed in itertools.product(DOMAINS, range(seeds)):
            x, y = features(truncation, domain), features.labels[domain]
            train, validation = split(y, seed, test_per_class=160)
            head, _ = adapt(x[train], y[train], x[train], 2, "source_only", seed=seed)
            scores.setdefault(truncation, []).append(accuracy(head, x[validation], y[validation]))
        encode = sum(features.seconds.get((truncation, domain), 0.0) for domain in DOMAINS)
        print(f"{truncation:20s} source validation {np.mean(scores[truncation]):.4f} ± "
              f"{np.std(scores[truncation]):.4f}  (encoding 6,400 reviews: {encode:.0f} s)", flush=True)
    return max(scores, key=lambda truncation: np.mean(scores[truncation]))


def pair_methods(source_x, source_y, pool_x, pool_y, test_x, test_y, seed, methods):
    """Every method's target test accuracy on one pair and seed, and its
    seconds (the pool's labels train target_supervised alone)."""
    results, seconds = {}, {}

    def timed(name, work):
        if name in methods:
            start = time.perf_counter()
            head, shift = work()
            seconds[name] = time.perf_counter() - start
            results[name] = accuracy(head, test_x - shift, test_y)

    def aligned(method, centring=False, self_training=False):
        # Centring: each domain's features minus its own mean (the target's from its unlabelled pool alone).
        source_shift, target_shift = (source_x.mean(axis=0), pool_x.mean(axis=0)) if centring else (0.0, 0.0)
        source, pool = source_x - source_shift, pool_x - target_shift
        head, _ = adapt(source, source_y, pool, 2, method, seed=seed)
        if self_training:
            self_train_head(head, source, source_y, pool, seed=seed)
        return head, target_shift

    timed("source_only", lambda: aligned("source_only"))
    timed("self_training", lambda: aligned("source_only", self_training=True))
    timed("coral", lambda: aligned("coral"))
    timed("dann", lambda: aligned("dann"))
    timed("centring", lambda: aligned("source_only", centring=True))
    timed("coral+self_training", lambda: aligned("coral", self_training=True))
    timed("centring+self_training", lambda: aligned("source_only", centring=True, self_training=True))
    timed("target_supervised", lambda: (adapt(pool_x, pool_y, pool_x, 2, "source_only", seed=seed)[0], 0.0))
    return results, seconds


# The fine-tuned stage's coral and dann weights: chosen on the review sentences' pools' own labels
# (benchmarks/transfer_between_domains.py --validate, amazon>imdb), never on these test sets.
ADAPTATION_WEIGHTS = {"coral": 3000.0, "dann": 0.3}
METHODS = ("source_only", "self_training", "coral", "dann", "centring", "coral+self_training",
           "centring+self_training", "target_supervised")
FINE_TUNED_METHODS = ("source_only", "self_training", "coral", "dann", "target_supervised")


def report(rows, methods):
    """The per-pair table (mean ± std over seeds), the mean over pairs, and
    the gap closed."""
    pairs = list(dict.fromkeys((row["source"], row["target"]) for row in rows))
    print("| pair | " + " | ".join(methods) + " |")
    print("| --- " * (len(methods) + 1) + "|")
    means = {}
    for pair in pairs:
        chosen = [row for row in rows if (row["source"], row["target"]) == pair]
        cells = []
        for method in methods:
            values = [row["accuracy"][method] for row in chosen]
            means.setdefault(method, []).append(np.mean(values))
            cells.append(f"{np.mean(values):.3f} ± {np.std(values):.3f}")
        print(f"| {pair[0]} → {pair[1]} | " + " | ".join(cells) + " |")
    print("| mean of pairs | " + " | ".join(f"**{np.mean(means[m]):.3f}**" for m in methods) + " |")
    if "target_supervised" in methods:
        source_only, supervised = np.array(means["source_only"]), np.array(means["target_supervised"])
        gap = supervised - source_only
        for method in methods:
            if method in ("source_only", "target_supervised"):
                continue
            gain = np.array(means[method]) - source_only
            closed = np.mean(gain[gap > 0.01] / gap[gap > 0.01]) if np.any(gap > 0.01) else float("nan")
            print(f"{method:24s} gain {100 * gain.mean():+.2f} points, worst pair {100 * gain.min():+.2f}, "
                  f"gap closed {closed:.2f} (pairs with a gap over 1 point: {int(np.sum(gap > 0.01))})")


def frozen_pairs(features, truncation, seeds, methods, targets=DOMAINS):
    """Every pair (into `targets`) and seed of `seeds`, over `features`."""
    rows = []
    for (source, target), seed in itertools.product(itertools.permutations(DOMAINS, 2), seeds):
        if target not in targets:
            continue
        source_x, target_x = features(truncation, source), features(truncation, target)
        pool, test = split(features.labels[target], seed)
        target_y = features.labels[target]
        accuracies, seconds = pair_methods(source_x, features.labels[source], target_x[pool], target_y[pool],
                                           target_x[test], target_y[test], seed, methods)
        rows.append({"source": source, "target": target, "seed": seed, "accuracy": accuracies, "seconds": seconds})
        print(f"{source} → {target} seed {seed}: " + ", ".join(f"{m} {a:.3f}" for m, a in accuracies.items()),
              flush=True)
    return rows


def fine_tuned_pairs(features, truncation, seeds, methods, earlier=(), pairs=None, backbone=minilm_l6_offline_path(),
                     strategy="partial:2", epochs=3, save=None):
    """Source-only and self-training with MiniLM fine-tuned (`strategy`), as
    the text recipe trains: one fine-tune a source and seed, scored on the
    three other domains' test sets, self-trained on each pool from it;
    coral and dann through the same fine-tune (`Classifier.fit_adapted`,
    a run a pair, at `ADAPTATION_WEIGHTS`); and target_supervised, one
    fine-tune on each target pool's labels. Figures
    in `earlier` rows (an earlier run's) are kept, not measured again;
    `pairs` (`(source, target)` tuples, all when `None`) limits the pairs;
    `save`, when given, is called with every row after each pair's runs,
    so a stopped run keeps what it measured."""
    from tl_keras import TextClassifier

    length, head = TRUNCATIONS[truncation]
    tokens = {domain: features.tokens[domain].head_and_tail(length, head) for domain in DOMAINS}
    rows = {(row["source"], row["target"], row["seed"]): row for row in earlier}

    def new_model(seed):
        keras.utils.set_random_seed(seed)
        return TextClassifier.from_preset(str(backbone), labels=["0", "1"], strategy=strategy,
                                          sequence_length=length)

    def score(model, target, test):
        return float(np.mean(model.predict(tokens[target].take(test)).argmax(-1) == features.labels[target][test]))

    def fit(model, domain, subset, seed):
        start = time.perf_counter()
        model.fit(tokens[domain].take(subset), [str(label) for label in features.labels[domain][subset]],
                  epochs=epochs, seed=seed, verbose=0)
        return time.perf_counter() - start

    def missing(key, wanted):
        return [m for m in wanted if m not in rows.get(key, {}).get("accuracy", {})]

    shared = [m for m in ("source_only", "self_training") if m in methods]  # from one source fine-tune
    adapted = [m for m in ADAPTATION_WEIGHTS if m in methods]  # a fine-tune of their own a pair
    for source, seed in itertools.product(DOMAINS, seeds):
        targets = [target for target in DOMAINS if target != source and (pairs is None or (source, target) in pairs)]
        keys = [(source, target, seed) for target in targets]
        if not any(missing(key, shared + adapted) for key in keys):
            continue
        model = None
        if any(missing(key, shared) for key in keys):
            model = new_model(seed)
            fit_seconds = fit(model, source, np.arange(len(features.labels[source])), seed)
            trained = model.get_weights()
        for target, key in zip(targets, keys):
            pool, test = split(features.labels[target], seed)
            row = rows.setdefault(key, {"source": source, "target": target, "seed": seed, "accuracy": {},
                                        "seconds": {}})
            if model is not None:
                row["accuracy"]["source_only"], row["seconds"]["source_only"] = score(model, target, test), fit_seconds
            if model is not None and "self_training" in methods:
                start = time.perf_counter()
                model.self_train(tokens[target].take(pool), seed=seed)
                row["seconds"]["self_training"] = time.perf_counter() - start
                row["accuracy"]["self_training"] = score(model, target, test)
                model.set_weights(trained)
            for method in missing(key, adapted):
                other = new_model(seed)
                start = time.perf_counter()
                other.fit_adapted(tokens[source], [str(label) for label in features.labels[source]],
                                  tokens[target].take(pool), method, epochs=epochs, seed=seed,
                                  adaptation_weight=ADAPTATION_WEIGHTS[method])
                row["seconds"][method] = time.perf_counter() - start
                row["accuracy"][method] = score(other, target, test)
            print(f"{source} → {target} seed {seed} ({strategy}): " + ", ".join(
                f"{m} {a:.3f}" for m, a in row["accuracy"].items()), flush=True)
            if save:
                save(list(rows.values()))
    if "target_supervised" in methods:
        for target, seed in itertools.product(DOMAINS, seeds):
            keys = [key for key in rows if key[1] == target and key[2] == seed]
            if all("target_supervised" in rows[key]["accuracy"] for key in keys):
                continue
            pool, test = split(features.labels[target], seed)
            model = new_model(seed)
            seconds = fit(model, target, pool, seed)
            accuracy_ = score(model, target, test)
            print(f"{target} seed {seed} target_supervised ({strategy}): {accuracy_:.3f}", flush=True)
            for key in keys:
                rows[key]["accuracy"]["target_supervised"] = accuracy_
                rows[key]["seconds"]["target_supervised"] = seconds
            if save:
                save(list(rows.values()))
    return list(rows.values())


def pretrained_pairs(args, truncation, methods):
    """Domain-adaptive continued pretraining: MiniLM trained as a masked LM
    on each target's unlabelled pool (`--pretraining-epochs`), then the
    methods over its frozen features (`--route frozen`) or its fine-tune
    on the source (`--route fine-tuned`)."""
    from tl_keras.training.continued_pretraining import continue_pretraining

    base = Features(args.data, args.cache)
    length, _ = TRUNCATIONS[truncation]
    pairs = parse_pairs(args.pairs)
    rows = []
    for target, seed in itertools.product(DOMAINS, seeds_of(args)):
        if not any(pair[1] == target for pair in pairs):
            continue
        pool, _ = split(base.labels[target], seed)
        preset = pathlib.Path(args.cache) / "presets" / f"{target}-seed{seed}-{args.pretraining_epochs}ep"
        if not preset.exists():
            start = time.perf_counter()
            _, history = continue_pretraining(minilm_l6_offline_path(), [base.rows[target].texts[i] for i in pool],
                                              preset, sequence_length=length, epochs=args.pretraining_epochs,
                                              verbose=0)
            print(f"masked LM on the {target} pool: {time.perf_counter() - start:.0f} s, loss "
                  f"{history['loss'][0]:.3f} → {history['loss'][-1]:.3f}", flush=True)
        if args.route == "frozen":
            features = Features(args.data, args.cache, backbone=preset)
            rows += [row for row in frozen_pairs(features, truncation, [seed], methods, targets=(target,))
                     if (row["source"], row["target"]) in pairs]
        else:
            rows += fine_tuned_pairs(base, truncation, [seed], methods, pairs=pairs, backbone=preset)
    return rows


def read_rows(path):
    """The rows of the results file `path` (none before the first run)."""
    return json.loads(path.read_text()) if path.exists() else []


def save_merged(path, rows):
    """Writes `rows` into the results file `path`, merged by (source,
    target, seed) with the rows already there, so that runs of other seeds
    or methods that share the file at the same time keep theirs."""
    merged = {}
    for row in [*read_rows(path), *rows]:
        key = (row["source"], row["target"], row["seed"])
        kept = merged.setdefault(key, {**row, "accuracy": {}, "seconds": {}})
        kept["accuracy"].update(row["accuracy"])
        kept["seconds"].update(row["seconds"])
    write_atomically(path, json.dumps(list(merged.values()), indent=1))


def seeds_of(args):
    """The seeds `--first-seed` and `--seeds` ask for."""
    return range(args.first_seed, args.first_seed + args.seeds)


def parse_pairs(text):
    """`"books>kitchen,dvd>books"` (or `"all"`) as `(source, target)` tuples."""
    if text == "all":
        return list(itertools.permutations(DOMAINS, 2))
    pairs = [tuple(pair.split(">")) for pair in text.split(",")]
    unknown = [pair for pair in pairs if len(pair) != 2 or not set(pair) <= set(DOMAINS) or pair[0] == pair[1]]
    if unknown:
        raise SystemExit(f"--pairs: {unknown[0]!r} is not source>target of two of {DOMAINS}")
    return pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the folder of books.tsv, dvd.tsv, electronics.tsv, kitchen.tsv")
    parser.add_argument("--cache", default="runs/amazon_domains", help="features and results go here")
    parser.add_argument("--stage", choices=("lengths", "frozen", "fine-tuned", "pretrained"), default="frozen",
                        help="lengths: choose the truncation on source validation; frozen, fine-tuned, pretrained: "
                             "the 12 pairs with frozen features, with the backbone fine-tuned (partial:2), or with "
                             "frozen features after continued pretraining on each target pool")
    parser.add_argument("--truncation", choices=TRUNCATIONS, default=None,
                        help="the pairs' truncation (default: the one --stage lengths chose)")
    parser.add_argument("--seeds", type=int, default=3, help="how many seeds")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="the first of them: --first-seed 1 --seeds 2 runs seeds 1 and 2")
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated (default: all the stage's): frozen features {','.join(METHODS)}; "
                             f"through the fine-tune {','.join(FINE_TUNED_METHODS)}")
    parser.add_argument("--pairs", default="all", help="comma-separated source>target pairs (fine-tuned, pretrained)")
    parser.add_argument("--route", choices=("frozen", "fine-tuned"), default="frozen",
                        help="--stage pretrained: the methods over frozen features or through the fine-tune")
    parser.add_argument("--pretraining-epochs", type=int, default=2, help="--stage pretrained: masked-LM epochs")
    args = parser.parse_args()
    through_fine_tune = args.stage == "fine-tuned" or (args.stage == "pretrained" and args.route == "fine-tuned")
    allowed = FINE_TUNED_METHODS if through_fine_tune else METHODS
    asked = args.methods.split(",") if args.methods else allowed
    unknown = [m for m in asked if m not in allowed]
    if unknown:
        parser.error(f"--methods: {unknown[0]!r} is not one of {','.join(allowed)} for --stage {args.stage}")
    methods = [m for m in allowed if m in asked]
    chosen_file = pathlib.Path(args.cache) / "truncation.json"
    if args.stage == "lengths":
        chosen = choose_truncation(Features(args.data, args.cache), args.seeds)
        chosen_file.write_text(json.dumps({"truncation": chosen}))
        print(f"chosen on source validation: {chosen}")
        return
    truncation = args.truncation or json.loads(chosen_file.read_text())["truncation"]
    seeds = seeds_of(args)
    print(f"MiniLM-L6 {args.stage}, {truncation}, seeds {list(seeds)}; target pool 1,200 unlabelled, test 400")
    start = time.perf_counter()
    if args.stage == "frozen":
        rows = frozen_pairs(Features(args.data, args.cache), truncation, seeds, methods)
    elif args.stage == "fine-tuned":
        # one file for every seed and pair measured fine-tuned: a run adds the ones it lacks
        measured = pathlib.Path(args.cache) / f"fine-tuned {truncation}.json"
        pairs = parse_pairs(args.pairs)
        rows = fine_tuned_pairs(Features(args.data, args.cache), truncation, seeds, methods,
                                read_rows(measured), pairs,
                                save=lambda rows: save_merged(measured, rows))
        rows = [row for row in rows if row["seed"] in seeds and (row["source"], row["target"]) in pairs]
    else:
        rows = pretrained_pairs(args, truncation, methods)
    if args.stage != "fine-tuned":
        name = f"{args.stage} {truncation} seeds {seeds.start}-{seeds.stop - 1}"
        if args.stage == "pretrained":
            name += f" {args.route} {args.pretraining_epochs}ep {args.pairs.replace('>', ' to ')}"
        (pathlib.Path(args.cache) / f"{name}.json").write_text(json.dumps(rows, indent=1))
    methods = [m for m in METHODS if all(m in row["accuracy"] for row in rows)]
    report(rows, methods)
    timed = {m: [row["seconds"][m] for row in rows if m in row["seconds"]] for m in methods}
    print("seconds a run (after features): " + ", ".join(
        f"{m} {np.mean(seconds):.1f}" for m, seconds in timed.items() if seconds))  # transcribed rows have none
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
