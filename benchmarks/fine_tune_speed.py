"""Full fine-tuning speed: tl_keras (tokenised once, length-bucketed batches)
vs the KerasHub-only way (`BertTextClassifier.from_preset(...,
sequence_length=64)`, `fit` on raw strings, every batch padded to 64).

MiniLM-L6, the bundled amazon reviews (640 train / 160 validation), batch 16,
3 epochs of the whole network each, learning rate 5e-5, side by side in one
run. tl_keras runs with no head warm-up here so both do exactly 3 full epochs.
Target: >= 2x faster, validation accuracy within 1 point. Both timings cover
loading, training and computing validation accuracy.

    .venv/bin/python benchmarks/fine_tune_speed.py
"""

import argparse
import tempfile

from common import EpochTimer, Timer, keras_hub_classifier, reviews, write_rows
import keras

from tl_keras.core.settings import build_config
from tl_keras.models.backbones import minilm_l6_offline_path
from tl_keras.workflows.text_classification import TextClassificationConfig, run
from tl_keras.training.trainer import TrainingConfig


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--sequence-length", type=int, default=64)
    parser.add_argument("--jit-compile", action="store_true", help="tl_keras with XLA")
    args = parser.parse_args()
    train, validation, _, train_y, validation_y = reviews()

    keras.utils.set_random_seed(1234)
    hub_epochs, our_epochs = EpochTimer(), EpochTimer()
    with Timer() as hub_time:
        classifier = keras_hub_classifier(args.sequence_length)
        classifier.compile(optimizer=keras.optimizers.AdamW(5e-5),
                           loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
        classifier.fit(x=train.texts, y=train_y, batch_size=16, epochs=args.epochs, verbose=0, callbacks=[hub_epochs])
        hub_accuracy = classifier.evaluate(x=validation.texts, y=validation_y, batch_size=16, verbose=0)[1]

    with tempfile.TemporaryDirectory() as folder, Timer() as ours_time:
        result = run(build_config(TextClassificationConfig, 
            train=write_rows(folder, "train.tsv", train), validation=write_rows(folder, "validation.tsv", validation), test=f"{folder}/validation.tsv",
            backbone=minilm_l6_offline_path(), output_dir=folder, strategy="full", resume=False,
            sequence_length=args.sequence_length,
            training=TrainingConfig(epochs=args.epochs, warmup_epochs=0, batch_size=16, layer_decay=1.0,
                                    head_learning_rate=5e-5, backbone_learning_rate=5e-5,
                                    jit_compile=args.jit_compile, verbose=0)),
            callbacks=[our_epochs])
    ours_accuracy = result.metrics["test"]["accuracy"]

    print(f"full fine-tune, {args.epochs} epochs, MiniLM-L6, batch 16, sequence length {args.sequence_length}")
    print(f"KerasHub-only (strings, padded to {args.sequence_length}): {hub_time.seconds:7.1f} s   "
          f"validation accuracy {hub_accuracy:.4f}")
    print(f"tl_keras (tokenised once, bucketed{', XLA' if args.jit_compile else ''}):   {ours_time.seconds:7.1f} s   validation accuracy {ours_accuracy:.4f}")
    print(f"epoch times (s), the first with tracing: KerasHub {[round(t, 1) for t in hub_epochs.seconds]}, "
          f"tl_keras {[round(t, 1) for t in our_epochs.seconds]} (tl_keras' include validation)")
    print(f"steady-state epoch speed-up {hub_epochs.steady() / our_epochs.steady():.2f}x")
    print(f"speed-up {hub_time.seconds / ours_time.seconds:.2f}x (target >= 2x); "
          f"accuracy difference {100 * (ours_accuracy - hub_accuracy):+.1f} points (target within 1)")


if __name__ == "__main__":
    main()
