"""Using a source domain, measured on every ordered pair of the three review
domains (amazon, yelp, imdb) over seeds, with MiniLM-L6 fine-tuned
(`partial:2`, 3 epochs, sequences of 64 tokens) as in the text recipe.

For each target domain its 800 shipped sentences are split (stratified, by
seed) into an unlabelled pool of 600 and a labelled test set of 200 that no
part of training sees. On each pair and seed, on the same test set:

- source_only: fine-tuned on the 800 labelled source sentences;
- self_training: that model, then `Classifier.self_train` on the pool's
  texts (pseudo-labels, 2 rounds, shares 0.6 and 0.9, 1 epoch each);
- coral, dann: `Classifier.fit_adapted` from the pretrained backbone with
  the same strategy, epochs and batches as source_only, on the source
  sentences and the pool's texts at once (`--coral-weight`,
  `--domain-weight`; choose them with `--validate`, which scores the
  pool's own labels instead of the test set);
- target_supervised: fine-tuned on the pool with its true labels (the
  upper bound);
- with 100 labelled target sentences (from the pool, 50 a class):
  target_100_only (fine-tuned on them alone, 10 epochs), source_then_target
  (the source model fine-tuned on them, 3 epochs, no warm-up) and joint
  (fine-tuned on source and target together, L = L_source + λ·L_target with
  λ = 4, as 4 copies of each target sentence).

    .venv/bin/python benchmarks/transfer_between_domains.py --seeds 3
    .venv/bin/python benchmarks/transfer_between_domains.py --seeds 1 --pairs amazon>imdb --validate \
        --methods source_only,coral --coral-weight 10
"""

import argparse
import itertools
import json
import time

import common  # noqa: F401  (quiet TensorFlow, TensorFlow backend)
import keras
import numpy as np

from tl_keras import TextClassifier
from tl_keras.data.texts import read_labelled_texts
from tl_keras.models.backbones import minilm_l6_offline_path

DOMAINS = {"amazon": "amazon_cells_labelled.txt", "yelp": "yelp_labelled.txt", "imdb": "imdb_labelled.txt"}
SETTINGS = dict(strategy="partial:2", sequence_length=64)
EPOCHS = 3
JOINT_WEIGHT = 4
METHODS = ("source_only", "self_training", "coral", "dann", "target_supervised", "target_100_only",
           "source_then_target", "joint")


def pool_and_test(labels, seed, test_per_class=100):
    """Row indices of the unlabelled pool and of the test set."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    test = np.concatenate([rng.permutation(np.flatnonzero(labels == label))[:test_per_class]
                           for label in sorted(set(labels))])
    return np.setdiff1d(np.arange(len(labels)), test), np.sort(test)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--pairs", default="all", help="comma-separated source>target pairs, or all")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {','.join(METHODS)}")
    parser.add_argument("--coral-weight", type=float, default=1.0)
    parser.add_argument("--domain-weight", type=float, default=1.0)
    parser.add_argument("--validate", action="store_true",
                        help="score on the pool's labels (choosing settings), not on the test sentences")
    args = parser.parse_args()
    chosen = args.methods.split(",")
    unknown = sorted(set(chosen) - set(METHODS))
    if unknown or "source_only" not in chosen:
        parser.error(f"--methods must include source_only and name only {METHODS}, received {args.methods!r}")
    if args.validate and set(chosen) - {"source_only", "self_training", "coral", "dann"}:
        parser.error("--validate scores the pool, which the target-label methods train on; leave them out")
    data = {name: read_labelled_texts(common.REVIEWS.parent / file) for name, file in DOMAINS.items()}
    pairs = list(itertools.permutations(DOMAINS, 2)) if args.pairs == "all" else \
        [tuple(pair.split(">")) for pair in args.pairs.split(",")]
    results, seconds = [], {}

    def new(seed):
        keras.utils.set_random_seed(seed)
        return TextClassifier.from_preset(minilm_l6_offline_path(), labels=["0", "1"], **SETTINGS)

    for (source, target), seed in itertools.product(pairs, range(args.seeds)):
        texts, labels = list(data[target].texts), [str(label) for label in data[target].labels]
        pool, test = pool_and_test(labels, seed)
        pool_texts, pool_labels = [texts[i] for i in pool], [labels[i] for i in pool]
        scored = pool if args.validate else test
        test_texts, test_labels = [texts[i] for i in scored], np.array([labels[i] for i in scored])
        few = np.concatenate([np.flatnonzero(np.array(pool_labels) == label)[:50] for label in ("0", "1")])
        few_texts, few_labels = [pool_texts[i] for i in few], [pool_labels[i] for i in few]
        source_texts, source_labels = list(data[source].texts), [str(l) for l in data[source].labels]

        def accuracy(model):
            return float(np.mean(np.array(model.predict_labels(test_texts)) == test_labels))

        row = {"source": source, "target": target, "seed": seed}

        def timed(name, work):
            if name not in chosen:
                return
            start = time.perf_counter()
            row[name] = work()
            seconds.setdefault(name, []).append(time.perf_counter() - start)

        model = new(seed)

        def source_only():
            model.fit(source_texts, source_labels, epochs=EPOCHS, seed=seed, verbose=0)
            return accuracy(model)

        timed("source_only", source_only)
        source_weights = model.get_weights()

        def self_training():
            row["rounds"] = model.self_train(pool_texts, seed=seed)
            return accuracy(model)

        timed("self_training", self_training)
        model.set_weights(source_weights)

        def adapted(method, weight):
            def work():
                other = new(seed)
                other.fit_adapted(source_texts, source_labels, pool_texts, method, epochs=EPOCHS,
                                  adaptation_weight=weight, seed=seed)
                return accuracy(other)
            return work

        timed("coral", adapted("coral", args.coral_weight))
        timed("dann", adapted("dann", args.domain_weight))

        def source_then_target():
            model.fit(few_texts, few_labels, epochs=EPOCHS, seed=seed, warmup_epochs=0, verbose=0)
            return accuracy(model)

        timed("source_then_target", source_then_target)

        def fresh(train_texts, train_labels, epochs):
            def work():
                other = new(seed)
                other.fit(train_texts, train_labels, epochs=epochs, seed=seed, verbose=0)
                return accuracy(other)
            return work

        timed("target_100_only", fresh(few_texts, few_labels, 10))
        timed("joint", fresh(source_texts + few_texts * JOINT_WEIGHT, source_labels + few_labels * JOINT_WEIGHT,
                             EPOCHS))
        timed("target_supervised", fresh(pool_texts, pool_labels, EPOCHS))
        results.append(row)
        print(json.dumps(row), flush=True)

    methods = [m for m in METHODS if m in chosen]
    adaptations = [m for m in ("self_training", "coral", "dann") if m in chosen]
    scored = "the pool's 600 sentences (validation)" if args.validate else "the 200 held-out test sentences"
    print(f"\n{args.seeds} seeds; mean (std) accuracy on each target's {scored}; coral weight "
          f"{args.coral_weight:g}, domain weight {args.domain_weight:g}\n")
    print("| pair | " + " | ".join(methods) + "".join(f" | {m} gain" for m in adaptations) + " |")
    print("|---|" + "---|" * (len(methods) + len(adaptations)))
    for source, target in pairs + [("mean", None)]:
        rows = [r for r in results if (r["source"], r["target"]) == (source, target) or source == "mean"]
        cells = [f"{np.mean([r[m] for r in rows]):.3f} ({np.std([r[m] for r in rows]):.3f})" for m in methods]
        gains = [f"{100 * np.mean([r[m] - r['source_only'] for r in rows]):+.1f}" for m in adaptations]
        print(f"| {source if target is None else f'{source} → {target}'} | " + " | ".join(cells + gains) + " |")
    print("\nseconds a run (mean): " + ", ".join(f"{m} {np.mean(s):.1f}" for m, s in seconds.items()))


if __name__ == "__main__":
    main()
