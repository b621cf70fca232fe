"""A smaller model to serve: the MiniLM-L6 teacher beside distilled students
and int8-quantized exports, side by side in one run.

The teacher is fine-tuned (`partial:2`, 3 epochs, the demo's settings) on the
bundled amazon reviews' training split; students (2 of its 6 blocks by
default, `--students 3,2` for more) and learn its softened probabilities on the same texts plus the
bundled yelp and imdb sentences as unlabelled transfer texts (their labels
unused; the amazon test rows are never seen). Every model is
scored on the 160 held-out reviews nothing was trained or tuned on, as a
float32, an int8 and a float16 export, and its
SavedModel is timed in-process: single-text p50/p99 and batch-of-32
throughput, plus the size of its variables on disk. Completeness of the
integrated-gradients explanations is checked on the teacher.

    .venv/bin/python benchmarks/compression.py
"""

import argparse
import pathlib
import tempfile
import time

import numpy as np
from common import REVIEWS, reviews
import tensorflow as tf

from tl_keras.data.texts import read_texts
from tl_keras.core.offline import minilm_l6_offline_path
from tl_keras.tasks.text_classifier import TextClassifier


def latency(function, texts, repeats):
    singles = [tf.constant([t]) for t in texts]
    for value in singles[:5]:
        function(text=value)
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        function(text=singles[i % len(singles)])
        times.append(time.perf_counter() - start)
    batches = [tf.constant(texts[i:i + 32]) for i in range(0, len(texts) - 31, 32)]
    function(text=batches[0])
    start = time.perf_counter()
    for batch in batches * 3:
        function(text=batch)
    throughput = 32 * len(batches) * 3 / (time.perf_counter() - start)
    milliseconds = 1000 * np.asarray(times)
    return np.percentile(milliseconds, 50), np.percentile(milliseconds, 99), throughput


def size_mb(folder):
    return sum(p.stat().st_size for p in pathlib.Path(folder).rglob("*") if p.is_file()) / 1e6


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--students", default="2", help="student block counts, comma-separated")
    parser.add_argument("--student-epochs", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--no-unlabelled", action="store_true", help="distil on the training texts alone")
    args = parser.parse_args()
    train, test, _, _, _ = reviews()
    teacher = TextClassifier.from_preset(minilm_l6_offline_path(), labels=["0", "1"], strategy="partial:2",
                                         sequence_length=64)
    teacher.fit(train.texts, train.labels, epochs=args.epochs, batch_size=16, verbose=0)
    models = {"teacher (6 blocks)": teacher}
    unlabelled = [] if args.no_unlabelled else [
        text for name in ("yelp_labelled.txt", "imdb_labelled.txt") for text in read_texts(REVIEWS.parent / name)]
    for blocks in (int(b) for b in args.students.split(",")):
        started = time.perf_counter()
        models[f"student ({blocks} blocks)"] = teacher.distill(
            train.texts, train.labels, unlabelled, num_blocks=blocks, epochs=args.student_epochs,
            learning_rate=args.learning_rate)
        print(f"distilled a {blocks}-block student in {time.perf_counter() - started:.1f} s")
    explanations = teacher.explain(test.texts[:5])
    gaps = [e.completeness_gap for e in explanations]
    print(f"integrated gradients on the teacher, 5 test texts: completeness gap max {max(gaps):.2e} "
          f"(probability differences {[round(e.probability - e.baseline_probability, 3) for e in explanations]})")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, model in models.items():
            for quantize in (None, "int8", "float16"):
                path = model.export(folder, f"m{len(rows)}", quantize=quantize)
                serve = tf.saved_model.load(str(path)).signatures["serving_default"]
                labels = [label.decode() for label in serve(text=tf.constant(test.texts))["label"].numpy()]
                accuracy = float(np.mean(np.asarray(labels) == np.asarray(test.labels)))
                p50, p99, throughput = latency(serve, test.texts, args.repeats)
                rows.append((name + (f", {quantize}" if quantize else ""), accuracy, p50, p99, throughput, size_mb(path)))
    teacher_p50, teacher_accuracy = rows[0][2], rows[0][1]
    print("\n| model | test accuracy | single-text p50 | p99 | batch-32 texts/s | SavedModel MB |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, accuracy, p50, p99, throughput, size in rows:
        print(f"| {name} | {accuracy:.4f} ({100 * (accuracy - teacher_accuracy):+.1f}) | {p50:.2f} ms "
              f"({teacher_p50 / p50:.2f}x) | {p99:.2f} ms | {throughput:.0f} | {size:.1f} |")


if __name__ == "__main__":
    main()
