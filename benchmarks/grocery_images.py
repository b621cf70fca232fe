"""The image classifier on real product photos (the Grocery Store dataset's
official train and val lists), side by side with the KerasHub-only peer,
for each offline EfficientNet-Lite backbone at its native resolution.

For each `--backbones` entry (`lite0`, `lite1`, `lite2`: converted once)
and each `--runs` entry `strategy:augmentation` (augmentations joined by
`+`), `tl_keras.ImageClassifier` is trained on `train.txt` and scored on
`val.txt`, fine and coarse accuracy, without and with mirror test-time
augmentation (the same trained weights). The peer is what a KerasHub user
writes first: `keras_hub.models.ImageClassifier.from_preset(preset,
num_classes=81)`, backbone frozen, KerasHub's default `compile()` (and
Adam at `--peer-learning-rates`), `fit` on the pixel arrays
(`--peer-epochs`). Each backbone runs in its own process, so its peak
resident memory is its own. With two or more tl_keras runs, a second table
scores every ensemble of them: the members' mirror-TTA probabilities
averaged.
The dataset's test split is not here: these val figures both choose
settings and report them (say so wherever they are quoted).

    .venv/bin/python benchmarks/grocery_images.py ../shared/data/grocery_store \
        --backbones lite0 lite1 lite2 --runs frozen:none partial:2:flip+zoom+contrast --epochs 8
"""

import argparse
import itertools
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

import common  # noqa: F401  (quiet TensorFlow, TensorFlow backend)
import keras
import keras_hub
from tl_keras.data.catalogue import read_catalogue, read_image_list
from tl_keras.data.images import ImageArray, load_images
from tl_keras.evaluation.hierarchy import hierarchical_report
from tl_keras.models.efficientnet_lite import LITE_VARIANTS, offline_lite_preset
from tl_keras.tasks.image_classifier import ImageClassifier


def scores(probabilities, names, labels, coarse_of):
    """Fine and coarse accuracy; `names` are the probabilities' columns."""
    report = hierarchical_report(probabilities, [names.index(label) for label in labels], names, coarse_of)
    return report["fine_accuracy"], report["coarse_accuracy"]


def mirrored(classifier):
    """The same trained weights with mirror test-time augmentation."""
    copy = ImageClassifier(classifier.backbone, classifier.vocabulary, classifier.image_size,
                           classifier.image_converter, test_time_augmentation="flip")
    copy.head.set_weights(classifier.head.get_weights())
    return copy


def backbone_rows(args, variant):
    """Every run of one backbone: a list of (name, fine, coarse, fine TTA,
    coarse TTA, seconds), and each tl_keras run's val probabilities (mirror
    TTA) by name."""
    folder = pathlib.Path(args.folder)
    catalogue = read_catalogue(folder / "classes.csv")
    train, validation = (read_image_list(folder / name, catalogue) for name in ("train.txt", "val.txt"))
    preset = offline_lite_preset(pathlib.Path(args.presets), variant)
    image_size = args.image_size or LITE_VARIANTS[variant][2]
    size = (image_size, image_size)
    started = time.perf_counter()
    train_pixels, validation_pixels = (load_images(rows, size, verbose=0)[0] for rows in (train, validation))
    print(f"{variant}: decoded {len(train_pixels)} + {len(validation_pixels)} photos at {image_size} in "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    names = sorted(set(train.labels))
    rows, probabilities = [], {}
    for run in args.runs:
        strategy, _, augmentation = run.rpartition(":")
        augmentation = augmentation.replace("+", ",")
        epochs = args.frozen_epochs if strategy == "frozen" else args.epochs
        classifier = ImageClassifier.from_preset(preset, labels=names, image_size=image_size, strategy=strategy,
                                                 augmentation=augmentation, seed=1234)
        started = time.perf_counter()
        classifier.fit(ImageArray(train_pixels), train.labels, epochs=epochs, batch_size=args.batch_size, seed=1234,
                       verbose=0)
        seconds = time.perf_counter() - started
        assert list(classifier.vocabulary.names) == names
        plain = scores(classifier.predict(validation_pixels), names, validation.labels, catalogue.coarse_of)
        name = f"{variant} at {image_size}: tl_keras `{strategy}`, augmentation {augmentation}, {epochs} epochs"
        probabilities[name] = mirrored(classifier).predict(validation_pixels)
        flipped = scores(probabilities[name], names, validation.labels, catalogue.coarse_of)
        rows.append((name, *plain, *flipped, seconds))
        print(rows[-1], flush=True)
    targets = np.array([names.index(label) for label in train.labels])
    for rate in args.peer_learning_rates:
        keras.utils.set_random_seed(1234)
        peer = keras_hub.models.ImageClassifier.from_preset(str(preset), num_classes=len(names))
        peer.backbone.trainable = False
        # "auto" is KerasHub's default compile (Adam at 5e-5, for fine-tuning).
        peer.compile(**({} if rate == "auto" else {"optimizer": keras.optimizers.Adam(float(rate))}))
        started = time.perf_counter()
        peer.fit(train_pixels.astype("float32"), targets, epochs=args.peer_epochs, batch_size=args.batch_size,
                 verbose=0)
        seconds = time.perf_counter() - started
        logits = peer.predict(validation_pixels.astype("float32"), batch_size=64, verbose=0)
        probabilities = keras.ops.convert_to_numpy(keras.ops.softmax(logits))
        setting = "default compile (Adam 5e-5)" if rate == "auto" else f"Adam {rate}"
        rows.append((f"{variant} at {image_size}: KerasHub `ImageClassifier`, backbone frozen, {setting}, "
                     f"{args.peer_epochs} epochs",
                     *scores(probabilities, names, validation.labels, catalogue.coarse_of), None, None, seconds))
        print(rows[-1], flush=True)
    return rows, probabilities, (len(train_pixels), len(validation_pixels), len(names))


def ensemble_rows(probabilities, folder):
    """Every combination of two or more tl_keras runs (across backbones):
    fine and coarse accuracy of their averaged mirror-TTA probabilities."""
    folder = pathlib.Path(folder)
    catalogue = read_catalogue(folder / "classes.csv")
    validation = read_image_list(folder / "val.txt", catalogue)
    train = read_image_list(folder / "train.txt", catalogue)
    names = sorted(set(train.labels))
    rows = []
    for size in range(2, len(probabilities) + 1):
        for members in itertools.combinations(probabilities, size):
            average = np.mean([probabilities[member] for member in members], axis=0)
            rows.append((" + ".join(members), *scores(average, names, validation.labels, catalogue.coarse_of)))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="the grocery_store/ folder (classes.csv, train.txt, val.txt)")
    parser.add_argument("--backbones", nargs="*", default=["lite0", "lite1", "lite2"], choices=sorted(LITE_VARIANTS))
    parser.add_argument("--runs", nargs="*", default=["frozen:none", "partial:2:flip+zoom+contrast"],
                        help="strategy:augmentation entries, augmentations joined by +")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--frozen-epochs", type=int, default=30)
    parser.add_argument("--image-size", type=int, help="one size for every backbone (default: each one's native)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--peer-learning-rates", nargs="*", default=["1e-3"],
                        help="one peer run each: auto (KerasHub's default compile) or an Adam learning rate")
    parser.add_argument("--peer-epochs", type=int, default=5, help="the peer runs the backbone every epoch")
    parser.add_argument("--presets", default="runs/grocery_cold_start/presets")
    parser.add_argument("--child-output", help=argparse.SUPPRESS)  # One backbone's rows, from its own process.
    args = parser.parse_args()
    if args.child_output:
        rows, probabilities, counts = backbone_rows(args, args.backbones[0])
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
        pathlib.Path(args.child_output).write_text(json.dumps({"rows": rows, "counts": counts, "peak_gib": peak}))
        np.savez(pathlib.Path(args.child_output).with_suffix(".npz"), **probabilities)
        return
    table, probabilities = [], {}
    with tempfile.TemporaryDirectory() as work:
        for variant in args.backbones:
            output = pathlib.Path(work) / f"{variant}.json"
            child = [arg for arg in sys.argv[1:]]
            subprocess.run([sys.executable, __file__, *child, "--backbones", variant, "--child-output", str(output)],
                           check=True)
            result = json.loads(output.read_text())
            table += [(*row, result["peak_gib"]) for row in result["rows"]]
            counts = result["counts"]
            with np.load(output.with_suffix(".npz")) as saved:
                probabilities.update({name: saved[name] for name in saved.files})
    print(f"\nGrocery Store, official val split ({counts[1]} photos), trained on train.txt ({counts[0]} photos, "
          f"{counts[2]} classes), each backbone at {args.image_size or 'its native resolution'}, batch "
          f"{args.batch_size}\n")
    print("| run | fine | coarse | fine, mirror TTA | coarse, mirror TTA | training time | peak memory |")
    print("|---|---|---|---|---|---|---|")
    for name, fine, coarse, fine_tta, coarse_tta, seconds, peak in table:
        tta = ("-", "-") if fine_tta is None else (f"{fine_tta:.3f}", f"{coarse_tta:.3f}")
        print(f"| {name} | {fine:.3f} | {coarse:.3f} | {tta[0]} | {tta[1]} | {seconds / 60:.1f} min | {peak:.1f} GiB |")
    if len(probabilities) > 1:
        print("\nEnsembles: the members' mirror-TTA probabilities averaged (each member's training time adds up)\n")
        print("| members | fine | coarse |")
        print("|---|---|---|")
        for members, fine, coarse in ensemble_rows(probabilities, args.folder):
            print(f"| {members} | {fine:.3f} | {coarse:.3f} |")


if __name__ == "__main__":
    main()
