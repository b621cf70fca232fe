"""Frozen image feature extraction: tl_keras (features cached once) vs the
KerasHub-only way (backbone frozen, `fit` on pixels every epoch).

Same images, same backbone (the offline ImageNet EfficientNet-Lite0,
converted once), same head (average pooling + dense softmax), 224x224,
batch 16, the same train / validation split, run side by side in one
process. Both timings cover reading and resizing the images, loading the
backbone, training and computing validation accuracy. Images: crops of six scikit-image
sample photographs (a sixth of each photograph's side, so crops of one
photograph differ widely), 40 a class.

    .venv/bin/python benchmarks/image_frozen_cache.py
"""

import argparse
import pathlib
import tempfile

from common import Timer
import keras
import keras_hub

from tl_keras.core.settings import build_config
from tl_keras.data.texts import LabelVocabulary, stratified_split
from tl_keras.models.efficientnet_lite import offline_lite_preset
from tl_keras.workflows.image_classification import ImageClassificationConfig, run
from tl_keras.data.images import load_images, read_labelled_images
from tl_keras.data.sample_images import CLASS_NAMES, write_sample_images
from tl_keras.training.trainer import TrainingConfig


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--per-class", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        preset = offline_lite_preset(folder)
        root = write_sample_images(f"{folder}/images", per_class=args.per_class, size=128, samples=tuple(CLASS_NAMES),
                                   fraction=1 / 6)
        train, validation = stratified_split(read_labelled_images(root), 0.25, seed=1234)
        for name, rows in (("train", train), ("validation", validation)):
            lines = ["path,label"] + [f"{path},{label}" for path, label in zip(rows.texts, rows.labels)]
            pathlib.Path(f"{folder}/{name}.csv").write_text("\n".join(lines) + "\n")
        vocabulary = LabelVocabulary.from_labels(train.labels)

        keras.utils.set_random_seed(1234)
        with Timer() as hub_time:
            train_pixels = load_images(train, (224, 224), verbose=0)[0]
            validation_pixels = load_images(validation, (224, 224), verbose=0)[0]
            classifier = keras_hub.models.ImageClassifier.from_preset(str(preset), num_classes=vocabulary.num_outputs,
                                                                      activation="softmax")
            classifier.backbone.trainable = False
            classifier.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy",
                               metrics=["accuracy"])
            classifier.fit(train_pixels, vocabulary.encode(train.labels), batch_size=16, epochs=args.epochs, verbose=0)
            hub_accuracy = classifier.evaluate(validation_pixels, vocabulary.encode(validation.labels), batch_size=16,
                                               verbose=0)[1]

        with Timer() as ours_time:
            result = run(build_config(ImageClassificationConfig, 
                train=f"{folder}/train.csv", validation=f"{folder}/validation.csv", test=f"{folder}/validation.csv", backbone=str(preset),
                output_dir=f"{folder}/run", strategy="frozen", augmentation="none", dropout=0.0, resume=False,
                training=TrainingConfig(epochs=args.epochs, batch_size=16, verbose=0)))
    ours_accuracy = result.metrics["test"]["accuracy"]
    print(f"frozen, {args.epochs} epochs, EfficientNet-Lite0 224x224, {len(train)} train / {len(validation)} "
          f"validation images, {vocabulary.num_outputs} classes")
    print(f"KerasHub-only (fit on pixels): {hub_time.seconds:7.1f} s   validation accuracy {hub_accuracy:.4f}")
    print(f"tl_keras (cached features):    {ours_time.seconds:7.1f} s   validation accuracy {ours_accuracy:.4f}")
    print(f"speed-up {hub_time.seconds / ours_time.seconds:.1f}x; "
          f"accuracy difference {100 * (ours_accuracy - hub_accuracy):+.1f} points")


if __name__ == "__main__":
    main()
