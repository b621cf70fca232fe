"""Frozen feature extraction: tl_keras (features cached once) vs the
KerasHub-only way (backbone frozen, `fit` on raw strings every epoch).

Same data (640 train / 160 validation amazon reviews), same MiniLM backbone,
5 epochs, batch 16, sequence length 64, run side by side in one process.
Target: >= 4x faster, validation accuracy within 1 point. Both timings cover
loading, training and computing validation accuracy.

    .venv/bin/python benchmarks/frozen_cache.py
"""

import argparse
import tempfile

from common import Timer, keras_hub_classifier, reviews, write_rows
import keras

from tl_keras.core.settings import build_config
from tl_keras.models.backbones import minilm_l6_offline_path
from tl_keras.workflows.text_classification import TextClassificationConfig, run
from tl_keras.training.trainer import TrainingConfig


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--pooling", default=None,
                        help="tl_keras pooling; 'pooled' uses the same BERT pooler as the KerasHub head")
    args = parser.parse_args()
    train, validation, vocab, train_y, validation_y = reviews()

    keras.utils.set_random_seed(1234)
    with Timer() as hub_time:
        classifier = keras_hub_classifier(args.sequence_length)
        classifier.backbone.trainable = False
        # The task model's head returns logits: use a from_logits loss.
        classifier.compile(optimizer=keras.optimizers.AdamW(1e-3),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        classifier.fit(x=train.texts, y=train_y, batch_size=16, epochs=args.epochs, verbose=0)
        hub_accuracy = classifier.evaluate(x=validation.texts, y=validation_y, batch_size=16, verbose=0)[1]

    with tempfile.TemporaryDirectory() as folder, Timer() as ours_time:
        result = run(build_config(TextClassificationConfig, 
            train=write_rows(folder, "train.tsv", train), validation=write_rows(folder, "validation.tsv", validation), test=f"{folder}/validation.tsv",
            backbone=minilm_l6_offline_path(), output_dir=folder, strategy="frozen", resume=False,
            sequence_length=args.sequence_length, pooling=args.pooling,
            training=TrainingConfig(epochs=args.epochs, batch_size=16, verbose=0)))
    ours_accuracy = result.metrics["test"]["accuracy"]

    print(f"frozen, {args.epochs} epochs, MiniLM-L6, {len(train)} train / {len(validation)} validation, "
          f"sequence length {args.sequence_length}, tl_keras pooling {result.task.encoder.layers[-1].name}")
    print(f"KerasHub-only (fit on strings): {hub_time.seconds:7.1f} s   validation accuracy {hub_accuracy:.4f}")
    print(f"tl_keras (cached features):     {ours_time.seconds:7.1f} s   validation accuracy {ours_accuracy:.4f}")
    print(f"speed-up {hub_time.seconds / ours_time.seconds:.1f}x (target >= 4x); "
          f"accuracy difference {100 * (ours_accuracy - hub_accuracy):+.1f} points (target within 1)")


if __name__ == "__main__":
    main()
