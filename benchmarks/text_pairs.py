"""A real text-pair task beside its single-text baseline: does this sentence
answer this question? (answer-sentence selection, as QNLI builds it from
SQuAD), on the bundled SQuAD v1.1 articles split by article.

For every question, its answer's sentence is a positive pair and another
sentence of the same paragraph a negative one (balanced). Three models on
the same rows, the text recipe's defaults otherwise (MiniLM-L6,
`partial:2`): the pair model (`--pair-column`: question and sentence packed
as one sequence), the single-text baseline (the sentence alone: what a
model learns without the question), and a lexical baseline (the share of
the question's content words in the sentence, thresholded where validation
accuracy is highest). Nothing is tuned on the test split, scored once; the
settings are the recipe's defaults, not tuned on validation either.

    .venv/bin/python benchmarks/text_pairs.py --questions 1000 --strategy partial:2
"""

import argparse
import csv
import pathlib
import tempfile
import time

import numpy as np

import common  # noqa: F401  (quiet TensorFlow, TensorFlow backend)
from tl_keras.core.settings import build_config
from tl_keras.core.offline import minilm_l6_offline_path
from tl_keras.data.squad import read_squad, sentence_spans, split_by_article
from tl_keras.models.lexical_qa import content_words
from tl_keras.training.config import TrainingConfig
from tl_keras.workflows.configs import TextClassificationConfig
from tl_keras.workflows.text_classification import run

SQUAD = pathlib.Path(__file__).resolve().parent.parent / "data" / "squad" / "squad_v1.1_12_articles.json"


def answer_sentence_pairs(questions, rng):
    """(question, sentence, label) rows: the answer's sentence ("yes") and
    one other sentence of the paragraph ("no"), for questions whose
    paragraph has two sentences or more."""
    rows = []
    for question in questions:
        spans = sentence_spans(question.context)
        start = question.answers[0][1]
        holding = [i for i, (first, last) in enumerate(spans) if first <= start < last]
        others = [i for i in range(len(spans)) if i not in holding]
        if not holding or not others:
            continue
        negative = others[int(rng.integers(len(others)))]
        for index, label in ((holding[0], "yes"), (negative, "no")):
            rows.append((question.question, question.context[slice(*spans[index])], label))
    return rows


def write_rows(path, rows):
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["question", "sentence", "label"])
        writer.writerows(rows)
    return path


def lexical_accuracy(validation, test):
    """Accuracy of "yes when the sentence holds at least a share t of the
    question's content words", t chosen on validation."""
    def overlap(question, sentence):
        wanted = content_words(question.split())
        return len(wanted & content_words(sentence.split())) / max(len(wanted), 1)

    def overlaps(rows):
        return np.array([overlap(question, sentence) for question, sentence, _ in rows])

    labels = {name: np.array([label == "yes" for *_, label in rows]) for name, rows in (("v", validation), ("t", test))}
    validation_overlap, test_overlap = overlaps(validation), overlaps(test)
    thresholds = np.unique(validation_overlap)
    best = max(thresholds, key=lambda t: np.mean((validation_overlap >= t) == labels["v"]))
    return {"validation": float(np.mean((validation_overlap >= best) == labels["v"])),
            "test": float(np.mean((test_overlap >= best) == labels["t"])), "threshold": float(best)}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=1000, help="training questions (2 rows each)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--strategy", default="partial:2")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    train, validation, test = split_by_article(read_squad(SQUAD), (0.75, 0.08, 0.17), args.seed)
    train = [train[i] for i in np.sort(rng.permutation(len(train))[: args.questions])]
    rows = {name: answer_sentence_pairs(part, rng) for name, part in
            (("train", train), ("validation", validation), ("test", test))}
    results, seconds = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        files = {name: str(write_rows(pathlib.Path(folder) / f"{name}.csv", part)) for name, part in rows.items()}
        for name, pair_column in (("pair: question + sentence", "sentence"), ("single text: sentence", None)):
            start = time.perf_counter()
            result = run(build_config(TextClassificationConfig, 
                train=files["train"], validation=files["validation"], test=files["test"],
                backbone=minilm_l6_offline_path(), output_dir=f"{folder}/{len(results)}", strategy=args.strategy,
                text_column="question" if pair_column else "sentence", pair_column=pair_column,
                sequence_length=128, resume=False,
                training=TrainingConfig(epochs=args.epochs, seed=args.seed, verbose=0)))
            seconds[name] = time.perf_counter() - start
            results[name] = {split: result.metrics[split]["accuracy"] for split in ("validation", "test")}
    lexical = lexical_accuracy(rows["validation"], rows["test"])
    results[f"lexical overlap >= {lexical['threshold']:.2f} (threshold on validation)"] = lexical
    print(f"\nAnswer-sentence selection from SQuAD v1.1 (bundled 12 articles, split by article): "
          f"{len(rows['train'])} train, {len(rows['validation'])} validation, {len(rows['test'])} test rows "
          f"(balanced); MiniLM-L6 {args.strategy}, {args.epochs} epochs, seed {args.seed}\n")
    print("| model | validation accuracy | test accuracy | run time |")
    print("|---|---|---|---|")
    for name, figures in results.items():
        print(f"| {name} | {figures['validation']:.3f} | {figures['test']:.3f} | "
              f"{seconds[name]:.0f} s |" if name in seconds else
              f"| {name} | {figures['validation']:.3f} | {figures['test']:.3f} | - |")


if __name__ == "__main__":
    main()
