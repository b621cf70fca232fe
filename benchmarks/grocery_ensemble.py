"""An ensemble of image classifiers on different backbones, as served: each
EfficientNet-Lite backbone's frozen head (mirror test-time augmentation)
trained on the Grocery Store `train.txt`, the heads averaged by
`tl_keras.transfer.fusion.ensemble` (pixels at the largest member's size,
resized for the others), exported as a SavedModel and scored on `val.txt`
by sending each photo's JPEG bytes to it, beside each member alone.

The val list both chooses and reports (the dataset's test split is not
here); the ensemble of all the backbones given was chosen before the run.

    .venv/bin/python benchmarks/grocery_ensemble.py ../shared/data/grocery_store --backbones lite0 lite1 lite2
"""

import argparse
import pathlib
import resource
import tempfile
import time

import numpy as np
import common  # noqa: F401  (quiet TensorFlow, TensorFlow backend)
import tensorflow as tf

from grocery_images import scores
from tl_keras.data.catalogue import read_catalogue, read_image_list
from tl_keras.data.images import ImageArray, load_images
from tl_keras.export.image import export_image_model
from tl_keras.models.efficientnet_lite import LITE_VARIANTS, offline_lite_preset
from tl_keras.tasks.image_classifier import ImageClassifier
from tl_keras.transfer.fusion import ensemble


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="the grocery_store/ folder (classes.csv, train.txt, val.txt)")
    parser.add_argument("--backbones", nargs="+", default=["lite0", "lite1", "lite2"], choices=sorted(LITE_VARIANTS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--presets", default="runs/grocery_cold_start/presets")
    args = parser.parse_args()
    folder = pathlib.Path(args.folder)
    catalogue = read_catalogue(folder / "classes.csv")
    train, validation = (read_image_list(folder / name, catalogue) for name in ("train.txt", "val.txt"))
    names = sorted(set(train.labels))
    members, rows = [], []
    for variant in args.backbones:
        size = LITE_VARIANTS[variant][2]
        classifier = ImageClassifier.from_preset(offline_lite_preset(pathlib.Path(args.presets), variant),
                                                 labels=names, image_size=size, strategy="frozen",
                                                 test_time_augmentation="flip", seed=1234)
        pixels = load_images(train, (size, size), verbose=0)[0]
        started = time.perf_counter()
        classifier.fit(ImageArray(pixels), train.labels, epochs=args.epochs, batch_size=args.batch_size, seed=1234,
                       verbose=0)
        seconds = time.perf_counter() - started
        assert list(classifier.vocabulary.names) == names
        val_pixels = load_images(validation, (size, size), verbose=0)[0]
        rows.append((f"{variant} at {size} `frozen`, mirror TTA, in process",
                     *scores(classifier.predict(val_pixels), names, validation.labels, catalogue.coarse_of), seconds))
        print(rows[-1], flush=True)
        members.append(classifier)
    averaged = ensemble(members, [member.vocabulary for member in members])
    size = tuple(averaged.input.shape[1:3])
    with tempfile.TemporaryDirectory() as exports:
        started = time.perf_counter()
        path = export_image_model(averaged, members[0].vocabulary, size, exports, "photos")
        exported = time.perf_counter() - started
        serve = tf.saved_model.load(str(path)).signatures["serving_default"]
        photos = [pathlib.Path(file).read_bytes() for file in validation.texts]
        started = time.perf_counter()
        served = np.concatenate([serve(image_bytes=tf.constant(photos[start:start + 16]))["probabilities"].numpy()
                                 for start in range(0, len(photos), 16)])
        per_photo = (time.perf_counter() - started) / len(photos)
    rows.append((f"ensemble of {' + '.join(args.backbones)}, served (JPEG bytes in, decoded at {size[0]})",
                 *scores(served, names, validation.labels, catalogue.coarse_of), sum(row[3] for row in rows)))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print(f"\nGrocery Store val list ({len(validation.texts)} photos), trained on train.txt ({len(train.texts)} "
          f"photos); export {exported:.0f} s, {per_photo * 1000:.0f} ms a photo served in batches of 16, peak "
          f"memory {peak:.1f} GiB\n")
    print("| run | fine | coarse | training time |\n|---|---|---|---|")
    for name, fine, coarse, seconds in rows:
        print(f"| {name} | {fine:.3f} | {coarse:.3f} | {seconds / 60:.1f} min |")


if __name__ == "__main__":
    main()
