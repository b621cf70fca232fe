"""New products recognised from their catalogue entry (cold start), on the
Grocery Store dataset: photos of 10 classes held out of training, ranked
among those 10 classes' catalogue entries (chance 10%).

Features: an offline EfficientNet-Lite (`--backbone`, Lite0 unless given:
it ranks new products best, 0.674 against Lite1's 0.605; ImageNet, frozen,
average pooled; at its native resolution unless `--image-size` says
otherwise) for shop photos and catalogue images; the offline MiniLM-L6
(mean pooled) for the product descriptions. Several backbones separated by
commas (`--backbone lite0,lite1,lite2`) train a matcher each and average
their scores, as the image recipe averages its members' probabilities; the
baseline then averages the backbones' raw cosines. `--test-time-augmentation
none,flip` also computes each image's features averaged with its mirror
image's, trains matchers on them too, and chooses the view per split on the
validation classes with the image weight. For each of `--splits` class
splits: 10 test classes, 10 validation classes, the other 61 seen (their
train and val photos train `CatalogueMatcher`); the image weight of the
combined score is chosen on the validation classes, never on the test
classes, whose photos (train and val lists) are scored once.

With `--export`, split 0 runs again through an exported
`CatalogueRecognizer` ranked among all 81 entries (see
`served_through_export`).

    .venv/bin/python benchmarks/grocery_cold_start.py ../shared/data/grocery_store --splits 3 --export
    .venv/bin/python benchmarks/grocery_cold_start.py ../shared/data/grocery_store --splits 3 \
        --backbone lite0,lite1,lite2 --test-time-augmentation none,flip
    .venv/bin/python benchmarks/grocery_cold_start.py ../shared/data/grocery_store --splits 3 \
        --backbone lite0,lite1,lite2 --image-size photos
"""

import argparse
import itertools
import pathlib
import time

import numpy as np

import common  # noqa: F401  (quiet TensorFlow, TensorFlow backend)
from tl_keras.core.offline import minilm_l6_offline_path
from tl_keras.data.catalogue import read_catalogue, read_image_list
from tl_keras.data.images import load_images
from tl_keras.data.texts import LabelledTexts
from tl_keras.models.catalogue_matching import CatalogueMatcher, nearest_catalogue_image
from tl_keras.models.efficientnet_lite import LITE_VARIANTS, offline_lite_preset
from tl_keras.tasks.catalogue_recognizer import CatalogueRecognizer, harmonic_mean
from tl_keras.tasks.image_classifier import ImageClassifier
from tl_keras.tasks.text_classifier import TextClassifier
from tl_keras.workflows.image_classification import backbone_presets, default_image_size

WEIGHTS = (0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def image_rows(folder):
    """The photos (train and val lists) and the catalogue images as
    `LabelledTexts` of paths, and the catalogue's entries in its order."""
    catalogue = read_catalogue(folder / "classes.csv")
    photos = [read_image_list(folder / name, catalogue) for name in ("train.txt", "val.txt")]
    photos = LabelledTexts(*(sum((getattr(rows, field) for rows in photos), []) for field in
                             ("texts", "labels", "origins")))
    entries = list(catalogue.entries.values())
    icons = LabelledTexts([e.image for e in entries], [e.name for e in entries], [e.image for e in entries])
    return photos, icons, entries


def image_side(work, variant, size, photo_paths):
    """The side `variant` reads images at: its native one (`size="native"`),
    the image recipe's default (`"photos"`: the typical side of
    `photo_paths` within `default_image_size`'s bounds), or `size` pixels."""
    if size == "native":
        return LITE_VARIANTS[variant][2]
    if size == "photos":
        return default_image_size(offline_lite_preset(work / "presets", variant), photo_paths)
    return size


def features(folder, work, variant, view="none", side=None):
    """Photo features and fine labels (train and val lists), catalogue image
    features and description embeddings, in the catalogue's order, cached
    in `work`, at `side` pixels (default: the native one). `view="flip"`:
    each image's features averaged with its mirror image's, as
    `test_time_augmentation="flip"` serves them."""
    native = LITE_VARIANTS[variant][2]
    side = side or native
    cache = work / (f"features_{variant}{'' if side == native else f'_{side}'}"
                    f"{'' if view == 'none' else '_' + view}.npz")
    if cache.is_file():
        return dict(np.load(cache))
    photos, icons, entries = image_rows(folder)
    # flip: the mirror images alone, averaged with the cached single view (MirrorAveraged at half its cost).
    embed = features(folder, work, variant, side=side) if view == "flip" else {}
    encoder = ImageClassifier.from_preset(offline_lite_preset(work / "presets", variant), labels=["a", "b"],
                                          image_size=side).encoder
    print(f"{variant}: images at {side} x {side}{', mirrored' if view == 'flip' else ''}", flush=True)
    for name, rows in (("photos", photos), ("icons", icons)):
        pixels, _, _ = load_images(rows, (side, side), verbose=1)
        if view == "flip":
            mirrored = encoder.predict(np.flip(pixels, axis=2).astype("float32"), batch_size=64, verbose=0)
            embed[name] = 0.5 * (embed[name] + mirrored)
        else:
            embed[name] = encoder.predict(pixels.astype("float32"), batch_size=64, verbose=0)
    if view == "flip":
        np.savez(cache, **embed)
        return embed
    texts = TextClassifier.from_preset(minilm_l6_offline_path(), labels=["a", "b"], sequence_length=128)
    embed["descriptions"] = texts.encoder.predict(
        texts.tokenize([e.description for e in entries]).arrays, verbose=0)
    names = [e.name for e in entries]
    embed["labels"] = np.array([names.index(label) for label in photos.labels])
    np.savez(cache, **embed)
    return embed


def backbones(value):
    """`--backbone`: Lite variants separated by commas, split as the image
    recipe splits its `--backbone`."""
    try:
        names = backbone_presets(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    unknown = [name for name in names if name not in LITE_VARIANTS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown backbone {unknown[0]!r} in {value!r}; choose among "
                                         f"{', '.join(sorted(LITE_VARIANTS))}")
    return names


def views(value):
    """`--test-time-augmentation`: none, flip, or both separated by a comma."""
    names = value.split(",")
    unknown = [name for name in names if name not in ("none", "flip")]
    if unknown or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"expected none, flip or none,flip, received {value!r}")
    return names


def image_size(value):
    """`--image-size`: native, photos, or a side in pixels."""
    if value in ("native", "photos"):
        return value
    if value.isdigit() and int(value) >= 32:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected native, photos or a side of at least 32 pixels, received {value!r}")


def top1(scores, truth):
    return float(np.mean(scores.argmax(axis=1) == truth))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="the grocery_store/ folder (classes.csv, train.txt, val.txt)")
    parser.add_argument("--splits", type=int, default=3)
    parser.add_argument("--backbone", type=backbones, default=["lite0"],
                        help=f"one of {', '.join(sorted(LITE_VARIANTS))}, or several separated by commas")
    parser.add_argument("--cache", help="the features folder (default: runs/grocery_cold_start; a file "
                                        "features_<backbone>.npz a backbone at its native side, "
                                        "features_<backbone>_<side>.npz at another, a _flip suffix "
                                        "mirror-averaged)")
    parser.add_argument("--test-time-augmentation", type=views, default=["none"],
                        help="none, flip (each image's features averaged with its mirror image's), or both "
                             "separated by a comma: then chosen on the validation classes with the image weight")
    parser.add_argument("--image-size", type=image_size, default="native",
                        help="native (each backbone's own, the default), photos (the image recipe's default: the "
                             "photos' typical side, between native and 1.5x native) or a side in pixels")
    parser.add_argument("--export", action="store_true", help="serve split 0 through an exported recognizer "
                                                              "(one backbone, no test-time augmentation)")
    args = parser.parse_args()
    if args.export and (len(args.backbone) > 1 or args.test_time_augmentation != ["none"]):
        parser.error(f"--export serves one backbone without test-time augmentation, received --backbone "
                     f"{','.join(args.backbone)} --test-time-augmentation {','.join(args.test_time_augmentation)}")
    work = pathlib.Path(args.cache or "runs/grocery_cold_start")
    work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    photo_paths = image_rows(pathlib.Path(args.folder))[0].texts  # Read once for every backbone's side.
    sides = {variant: image_side(work, variant, args.image_size, photo_paths) for variant in args.backbone}
    data = {(view, variant): features(pathlib.Path(args.folder), work, variant, view, sides[variant])
            for view, variant in itertools.product(args.test_time_augmentation, args.backbone)}
    print(f"features: {time.perf_counter() - start:.0f} s")
    first = next(iter(data.values()))
    labels, descriptions = first["labels"], first["descriptions"]
    rows, split_classes = [], []
    for split in range(args.splits):
        order = np.random.default_rng(split).permutation(len(descriptions))
        test, validation, seen = order[:10], order[10:20], order[20:]
        trained = np.isin(labels, seen)
        position = {c: i for i, c in enumerate(seen)}
        started = time.perf_counter()
        matchers = {}
        for key, arrays in data.items():
            matchers[key] = CatalogueMatcher(arrays["photos"].shape[1], descriptions.shape[1])
            matchers[key].fit_entries(arrays["photos"][trained], [position[c] for c in labels[trained]],
                                      arrays["icons"][seen], descriptions[seen], seed=split)
        seconds = time.perf_counter() - started

        def scores(classes, weight, view, variants=args.backbone):
            """The matchers' scores in `view`, averaged over `variants`."""
            chosen = np.isin(labels, classes)
            truth = np.array([list(classes).index(c) for c in labels[chosen]])
            return np.mean([matchers[view, v].similarities(data[view, v]["photos"][chosen],
                                                           data[view, v]["icons"][classes], descriptions[classes],
                                                           weight) for v in variants], axis=0), truth

        def chosen_weight(view):
            return max(WEIGHTS, key=lambda w: top1(*scores(validation, w, view)))

        # The view and the image weight, chosen together on the validation classes (ties: the first listed).
        view, weight = max(((v, chosen_weight(v)) for v in args.test_time_augmentation),
                           key=lambda vw: top1(*scores(validation, vw[1], vw[0])))
        chosen = np.isin(labels, test)
        truth = np.array([list(test).index(c) for c in labels[chosen]])
        split_classes.append((weight, seen, validation, test))
        nearest = np.mean([nearest_catalogue_image(data[view, v]["photos"][chosen], data[view, v]["icons"][test])
                           for v in args.backbone], axis=0)
        members = {} if len(args.backbone) == 1 else {
            f"matcher, both, {v} alone (the ensemble's weight)": top1(*scores(test, weight, view, [v]))
            for v in args.backbone}
        views_alone = {} if len(args.test_time_augmentation) == 1 else {
            f"matcher, both, test-time augmentation {v} (its weight chosen on validation)":
                top1(*scores(test, chosen_weight(v), v)) for v in args.test_time_augmentation}
        rows.append({
            "nearest catalogue image": top1(nearest, truth),
            **members,
            **views_alone,
            "matcher, image only": top1(*scores(test, 1.0, view)),
            "matcher, description only": top1(*scores(test, 0.0, view)),
            "matcher, both (weight chosen on validation)": top1(*scores(test, weight, view)),
            "view": view, "weight": weight, "photos": int(chosen.sum()), "seconds": seconds,
        })
        print(f"split {split}: {rows[-1]}", flush=True)
    print(f"\nGrocery Store, photos of 10 held-out classes ranked among their 10 catalogue entries "
          f"(chance 0.100), {args.splits} class splits, mean (std)\n")
    print("| method | top-1 |")
    print("|---|---|")
    for name in rows[0]:
        if name in ("view", "weight", "photos", "seconds"):
            continue
        values = [row[name] for row in rows]
        print(f"| {name} | {np.mean(values):.3f} ({np.std(values):.3f}) |")
    print(f"\nimage sides: {sides}; views chosen: {[row['view'] for row in rows]}; "
          f"image weights chosen: {[row['weight'] for row in rows]}; test photos a split: "
          f"{[row['photos'] for row in rows]}; matcher training {np.mean([row['seconds'] for row in rows]):.0f} s")
    if args.export:
        served_through_export(pathlib.Path(args.folder), work, args.backbone[0], sides[args.backbone[0]],
                              *split_classes[0])


def served_through_export(folder, work, variant, side, weight, seen, validation, test):
    """Split 0 through an exported `CatalogueRecognizer`, ranked among all
    81 entries (generalised zero-shot): trained on the seen classes'
    train.txt photos, the validation and test classes added from their
    entries, `seen_bias` calibrated on half of the seen classes' val.txt
    photos and the validation classes' photos; scored on the other half and
    on the test classes' photos, served from the SavedModel as JPEG bytes."""
    import tensorflow as tf

    catalogue = read_catalogue(folder / "classes.csv")
    entries = list(catalogue.entries.values())
    train, val = (read_image_list(folder / name, catalogue) for name in ("train.txt", "val.txt"))
    names = {group: {entries[c].name for c in classes} for group, classes in
             (("seen", seen), ("validation", validation), ("test", test))}

    def photos(rows, group, part=None):
        chosen = [(path, label) for path, label in zip(rows.texts, rows.labels) if label in names[group]]
        return chosen if part is None else chosen[part::2]

    started = time.perf_counter()
    recognizer = CatalogueRecognizer.from_preset(offline_lite_preset(work / "presets", variant), minilm_l6_offline_path(),
                                                 image_size=side, sequence_length=128, image_weight=weight)
    trained = photos(train, "seen")
    recognizer.fit([p for p, _ in trained], [label for _, label in trained], [entries[c] for c in seen], seed=0)
    recognizer.add_entries([entries[c] for c in [*validation, *test]])  # An image and a text each, no photos.
    calibration = photos(val, "seen", 0) + photos(train, "validation") + photos(val, "validation")
    table = recognizer.calibrate([p for p, _ in calibration], [label for _, label in calibration])
    chosen = next(row for row in table if row["bias"] == recognizer.seen_bias)
    version = recognizer.export(work / "exports", "grocery_products", k=5)
    serve = tf.saved_model.load(str(version)).signatures["serving_default"]
    report = {}
    for group, rows in (("seen", photos(val, "seen", 1)), ("new", photos(train, "test") + photos(val, "test"))):
        served = []
        for first in range(0, len(rows), 64):
            batch = [pathlib.Path(path).read_bytes() for path, _ in rows[first:first + 64]]
            served += serve(image_bytes=tf.constant(batch))["product"].numpy().astype(str).tolist()
        truth = np.array([label for _, label in rows])
        features = recognizer.image_features([path for path, _ in rows])
        nearest = nearest_catalogue_image(features, recognizer.entry_image_features).argmax(axis=1)
        scores = recognizer.predict([path for path, _ in rows])
        uncalibrated = (scores + recognizer.entry_bias).argmax(axis=1)
        offline = np.array(recognizer.entry_names)[scores.argmax(axis=1)]
        report[group] = {"photos": len(rows), "served": float(np.mean(np.array(served) == truth)),
                         "served_equals_offline": float(np.mean(np.array(served) == offline)),
                         "uncalibrated": float(np.mean(np.array(recognizer.entry_names)[uncalibrated] == truth)),
                         "nearest": float(np.mean(np.array(recognizer.entry_names)[nearest] == truth))}

    print(f"\nexported recognizer ({version}): {len(recognizer.entry_names)} entries, {recognizer.num_trained} trained "
          f"on {len(trained)} photos, {len(recognizer.entry_names) - recognizer.num_trained} added from their "
          f"catalogue entries; seen_bias {recognizer.seen_bias:g} chosen on {len(calibration)} validation photos "
          f"(trained {chosen['trained']:.3f}, added {chosen['added']:.3f}); {time.perf_counter() - started:.0f} s")
    print("\n| top-1 among all entries | seen classes' held-out photos | new classes' photos | harmonic mean |")
    print("|---|---|---|---|")
    for name, key in (("served, calibrated", "served"), ("offline, seen_bias 0", "uncalibrated"),
                      ("nearest catalogue image (raw features, no training)", "nearest")):
        seen_figure, new_figure = report["seen"][key], report["new"][key]
        print(f"| {name} | {seen_figure:.3f} | {new_figure:.3f} | {harmonic_mean(seen_figure, new_figure):.3f} |")
    print(f"\nphotos: {report['seen']['photos']} seen, {report['new']['photos']} new; served = offline on "
          f"{report['seen']['served_equals_offline']:.3f} and {report['new']['served_equals_offline']:.3f}")


if __name__ == "__main__":
    main()
