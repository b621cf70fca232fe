"""Text pairs where word overlap says nothing: PAWS-Wiki (Zhang et al.,
NAACL 2019), whose paraphrases and non-paraphrases share almost all their
words ("flights from New York to Florida" / "from Florida to New York").

The 8,000 pairs of the dev file are split once by seed, stratified: a test
split (`--test-size`, 1,600) that nothing is tuned on and that is scored
once per model, a validation split (`--validation-size`, 800) that
chooses among the candidate settings, and the rest (5,600) for training.
Side by side on the same rows:

- word overlap: the Jaccard share of words the two sentences have in
  common, thresholded where validation accuracy is highest;
- the single-text baseline: the first sentence alone, MiniLM-L6 frozen
  (what a model learns without seeing the pair; beside the frozen pair
  model, the same features of both sentences packed together);
- MiniLM-L6 on the pair packed as one sequence (`[CLS] a [SEP] b [SEP]`):
  the candidates below, fixed before any run, one chosen on validation;
- SmolLM2-135M (its offline GGUF file) on the pair packed as one causal
  sequence, last-token pooling: `frozen` (cached features) and `lora:8`
  (on `--decoder-train` rows: a 135M decoder trains ~10x slower than
  MiniLM here).

`--swap` candidates also train on each pair in the other order (a
paraphrase is one both ways): twice the rows at the same labels.

    .venv/bin/python benchmarks/paws.py --data ../shared/data/paws_wiki/dev.tsv

`--learning-curve 700,1400,2800 --only none` trains the `plain` full
setting on growing stratified heads of the training split (nothing else),
and fits validation accuracy against ln(rows): what more pairs would buy.
"""

import argparse
import pathlib
import re
import time

import numpy as np

import common  # noqa: F401  (quiet TensorFlow, TensorFlow backend)
from tl_keras.core.offline import minilm_l6_offline_path, smollm2_offline_path
from tl_keras.models.gguf import gguf_preset
from tl_keras.tasks.text_classifier import TextClassifier

DEFAULT_DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "paws_wiki" / "dev.tsv"
LABELS = ["0", "1"]
# (name, strategy, epochs, fit settings, swap): fixed before the runs.
CANDIDATES = [
    ("frozen (cached features), head 30 epochs", "frozen", 30, {}, False),
    ("partial:2, 4 epochs (the text recipe's default)", "partial:2", 4, {}, False),
    ("full, 3 epochs, 5e-5, layer decay 0.8 (full's defaults)", "full", 3, {}, False),
    ("full, 3 epochs, 1e-4, no layer decay (plain)", "full", 3, {"backbone_learning_rate": 1e-4, "layer_decay": 1.0}, False),
    ("full, 3 epochs, 1e-4, no layer decay, swapped pairs", "full", 3,
     {"backbone_learning_rate": 1e-4, "layer_decay": 1.0}, True),
]


def read_paws(path):
    """(sentence1, sentence2, label) rows of a PAWS TSV file (no header);
    a malformed line is refused with its file and line."""
    rows = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            parts = line.rstrip("\n").split("\t")
            if len(parts) != 3 or parts[2] not in LABELS:
                raise ValueError(f"{path}:{number}: expected `sentence1<TAB>sentence2<TAB>0|1`, received {line[:80]!r}")
            rows.append(tuple(parts))
    return rows


def split(rows, test_size, validation_size, seed):
    """Stratified (train, validation, test) lists of rows."""
    rng = np.random.default_rng(seed)
    parts = {"train": [], "validation": [], "test": []}
    for label in LABELS:
        indices = rng.permutation([i for i, row in enumerate(rows) if row[2] == label])
        share = len(indices) / len(rows)
        n_test, n_validation = round(test_size * share), round(validation_size * share)
        parts["test"] += list(indices[:n_test])
        parts["validation"] += list(indices[n_test:n_test + n_validation])
        parts["train"] += list(indices[n_test + n_validation:])
    return {name: [rows[i] for i in sorted(indices)] for name, indices in parts.items()}


def words(sentence):
    return set(re.findall(r"\w+", sentence.lower()))


def overlap_accuracy(validation, test):
    """Word overlap thresholded on validation: (validation acc, test acc, threshold)."""
    def scores(rows):
        return np.array([len(words(a) & words(b)) / max(len(words(a) | words(b)), 1) for a, b, _ in rows])

    def labels(rows):
        return np.array([label == "1" for *_, label in rows])

    v_scores, t_scores = scores(validation), scores(test)
    best = max(np.unique(v_scores), key=lambda t: np.mean((v_scores >= t) == labels(validation)))
    return (float(np.mean((v_scores >= best) == labels(validation))),
            float(np.mean((t_scores >= best) == labels(test))), float(best))


def accuracy(classifier, rows, single):
    inputs = [a for a, _, _ in rows] if single else [(a, b) for a, b, _ in rows]
    return float(np.mean([p == label for p, (*_, label) in zip(classifier.predict_labels(inputs), rows)]))


def train(preset, strategy, epochs, settings, rows, seed, single=False, swap=False, sequence_length=128):
    inputs = [a for a, _, _ in rows] if single else [(a, b) for a, b, _ in rows]
    labels = [label for *_, label in rows]
    if swap:
        inputs, labels = inputs + [(b, a) for a, b, _ in rows], labels + labels
    classifier = TextClassifier.from_preset(preset, labels=LABELS, strategy=strategy, sequence_length=sequence_length)
    classifier.fit(inputs, labels, epochs=epochs, batch_size=16, verbose=0, seed=seed, **settings)
    return classifier


def learning_curve(args, train_rows, report, results):
    """The plain full setting on growing heads of the training split: how
    validation accuracy grows with the rows, fitted as a + b·ln(rows) (the
    usual shape of a learning curve over a few doublings), and how many
    rows that line needs for 0.80."""
    name, strategy, epochs, settings, _ = CANDIDATES[3]
    sizes, scores = [], []
    for size in (int(size) for size in args.learning_curve.split(",")):
        rows = train_rows if size >= len(train_rows) else split(train_rows, 0, size, args.seed)["validation"]
        started = time.perf_counter()
        classifier = train(minilm_l6_offline_path(), strategy, epochs, settings, rows, args.seed)
        report(f"MiniLM-L6 pair, {name}, {len(rows)} training rows", classifier, time.perf_counter() - started)
        sizes.append(len(rows))
        scores.append(results[-1][1])
    slope, intercept = np.polyfit(np.log(sizes), scores, 1)
    total = len(train_rows) + args.validation_size + args.test_size
    print(f"learning curve: validation accuracy ≈ {intercept:.3f} + {slope:.4f}·ln(rows) over {sizes}: "
          f"{slope * np.log(2):+.3f} a doubling; {intercept + slope * np.log(len(train_rows)):.3f} at "
          f"{len(train_rows)} rows, {intercept + slope * np.log(total):.3f} at all {total} dev pairs; 0.80 at "
          f"about {np.exp((0.8 - intercept) / slope) if slope > 0 else float('inf'):,.0f} rows", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="PAWS-Wiki's dev.tsv (default: %(default)s)")
    parser.add_argument("--test-size", type=int, default=1600)
    parser.add_argument("--validation-size", type=int, default=800)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--decoder-train", type=int, default=1600,
                        help="training rows for the SmolLM2 runs (a stratified head of the training split)")
    parser.add_argument("--learning-curve", help="training sizes (comma-separated) for the `plain` full setting, a "
                                                 "stratified head of the training split each: validation accuracy "
                                                 "fitted against ln(rows) and extrapolated to the whole dev file")
    parser.add_argument("--cache", default="runs/paws", help="where the GGUF file is converted")
    parser.add_argument("--only", nargs="*", help="run only rows whose name contains one of these")
    args = parser.parse_args()

    parts = split(read_paws(args.data), args.test_size, args.validation_size, args.seed)
    print({name: len(rows) for name, rows in parts.items()}, flush=True)
    train_rows, validation, test = parts["train"], parts["validation"], parts["test"]
    results = []

    def report(name, classifier, seconds, single=False):
        results.append((name, accuracy(classifier, validation, single), accuracy(classifier, test, single), seconds))
        print(results[-1], flush=True)

    def wanted(name):
        return not args.only or any(part in name for part in args.only)

    v_acc, t_acc, threshold = overlap_accuracy(validation, test)
    results.append((f"word overlap (Jaccard >= {threshold:.2f}, threshold on validation)", v_acc, t_acc, 0.0))
    minilm, chosen = minilm_l6_offline_path(), None
    for name, strategy, epochs, settings, swap in CANDIDATES:
        if not wanted(name):
            continue
        started = time.perf_counter()
        classifier = train(minilm, strategy, epochs, settings, train_rows, args.seed, swap=swap)
        report(f"MiniLM-L6 pair, {name}", classifier, time.perf_counter() - started)
        if chosen is None or results[-1][1] > chosen[0]:
            chosen = (results[-1][1], name, strategy, epochs, settings)
    if wanted("single"):
        started = time.perf_counter()
        classifier = train(minilm, "frozen", 30, {}, train_rows, args.seed, single=True)
        report("MiniLM-L6 single text (the first sentence alone), frozen, head 30 epochs", classifier,
               time.perf_counter() - started, single=True)
    decoder_rows = split(train_rows, 0, args.decoder_train, args.seed)["validation"]
    for name, strategy, epochs in (("frozen (last token), head 30 epochs", "frozen", 30), ("lora:8, 3 epochs", "lora:8", 3)):
        if not wanted(f"SmolLM2 {name}"):
            continue
        started = time.perf_counter()
        classifier = train(gguf_preset(smollm2_offline_path(), args.cache), strategy, epochs, {}, decoder_rows, args.seed)
        report(f"SmolLM2-135M pair, {name}, {len(decoder_rows)} training rows", classifier, time.perf_counter() - started)

    if args.learning_curve:
        learning_curve(args, train_rows, report, results)

    print(f"\nPAWS-Wiki dev file split by seed {args.seed}: {len(train_rows)} train, {len(validation)} validation "
          f"(chooses the MiniLM setting{': ' + chosen[1] if chosen else ''}), {len(test)} test (scored once, "
          f"tuned on by nothing)\n")
    print("| model | validation acc | test acc | seconds |\n| --- | --- | --- | --- |")
    for name, val_acc, test_acc, seconds in results:
        print(f"| {name} | {val_acc:.3f} | {test_acc:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
