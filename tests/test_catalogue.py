"""Product catalogues (the Grocery Store layout), fine and coarse labels with
the coarse fallback by hand, the cold-start catalogue matcher on a planted
domain shift, and the image recipe on an image list with a catalogue."""

import json
import subprocess

import numpy as np
import pytest

from tl_keras.data.catalogue import read_catalogue, read_image_list
from tl_keras.data.sample_images import write_sample_images
from tl_keras.data.texts import DataError
from tl_keras.evaluation.hierarchy import hierarchical_report
from tl_keras.models.catalogue_matching import CatalogueMatcher, nearest_catalogue_image

HEADER = ("Class Name (str),Class ID (int),Coarse Class Name (str),Coarse Class ID (int),"
          "Iconic Image Path (str),Product Description Path (str)\n")


@pytest.fixture()
def shop(tmp_path):
    """A catalogue of the sample photos' classes (two per coarse class) and
    an image list of their crops."""
    folder = write_sample_images(tmp_path / "photos")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    lines, listing = [HEADER], []
    for number, name in enumerate(classes):
        image = sorted((folder / name).iterdir())[0]
        (tmp_path / f"{name}.txt").write_text(f"A {name} as the shop describes it.")
        lines.append(f"{name},{number},group{number // 2},{number // 2},/photos/{name}/{image.name},/{name}.txt\n")
        listing += [f"photos/{name}/{path.name}, {number}, {number // 2}\n" for path in sorted((folder / name).iterdir())]
    (tmp_path / "classes.csv").write_text("".join(lines))
    (tmp_path / "train.txt").write_text("".join(listing))
    return tmp_path, classes


def test_catalogue_and_image_list_read_with_coarse_classes(shop):
    folder, classes = shop
    catalogue = read_catalogue(folder / "classes.csv")
    assert catalogue.names == classes and catalogue.coarse_of[classes[1]] == "group0"
    assert catalogue.entries[0].description == f"A {classes[0]} as the shop describes it."
    rows = read_image_list(folder / "train.txt")
    assert set(rows.labels) == set(classes) and all(p.startswith(str(folder)) for p in rows.texts)
    assert rows.origins[0] == f"{folder / 'train.txt'}:1"


@pytest.mark.parametrize("line, pattern", [
    ("photos/x.jpg, 99, 0", r"train\.txt:1: class id 99 is not in the catalogue"),
    ("photos/x.jpg, 1, 5", r"train\.txt:1: coarse class id 5 is not that of class 1"),
    ("photos/x.jpg, one, 0", r"train\.txt:1: column 'fine_class_id' must be an integer, received 'one'"),
    ("photos/x.jpg", r"train\.txt:1: expected `path, fine_class_id, coarse_class_id`"),
])
def test_bad_list_lines_are_named(shop, line, pattern):
    folder, _ = shop
    (folder / "train.txt").write_text(line + "\n")
    with pytest.raises(DataError, match=pattern):
        read_image_list(folder / "train.txt")


def test_missing_catalogue_file_is_named(shop):
    folder, classes = shop
    (folder / f"{classes[0]}.txt").unlink()
    with pytest.raises(DataError, match=rf"classes\.csv:2: no such file .*{classes[0]}\.txt"):
        read_catalogue(folder / "classes.csv")


def test_hierarchy_and_fallback_by_hand():
    names = ["granny", "golden", "oat", "soy"]
    coarse_of = {"granny": "apple", "golden": "apple", "oat": "milk", "soy": "milk"}
    probabilities = np.array([[0.9, 0.1, 0, 0],     # granny: fine right
                              [0.45, 0.4, 0.15, 0],  # golden: fine wrong (granny), coarse right (apple 0.85)
                              [0.1, 0.3, 0.35, 0.25]])  # soy: fine wrong (oat), coarse right (milk 0.6)
    report = hierarchical_report(probabilities, [0, 1, 3], names, coarse_of, thresholds=(0.0, 0.5, 1.0))
    assert report["fine_accuracy"] == pytest.approx(1 / 3) and report["coarse_accuracy"] == 1.0
    assert report["fallback"] == [
        {"threshold": 0.0, "accuracy": pytest.approx(1 / 3), "fine_coverage": 1.0},   # always fine
        {"threshold": 0.5, "accuracy": 1.0, "fine_coverage": pytest.approx(1 / 3)},     # the unsure two fall back
        {"threshold": 1.0, "accuracy": 1.0, "fine_coverage": 0.0},
    ]


def test_matcher_learns_a_shift_and_recognises_new_entries():
    rng = np.random.default_rng(0)
    classes, dim = 40, 32
    catalogue = rng.normal(size=(classes, dim))
    descriptions = catalogue @ rng.normal(size=(dim, 16))  # The text space: another view of the products.
    shift = np.linalg.qr(rng.normal(size=(dim, dim)))[0]  # Shop photos: a rotated, noisy view.
    labels = np.repeat(np.arange(classes), 12)
    photos = catalogue[labels] @ shift + 0.3 * rng.normal(size=(len(labels), dim))
    seen, new = np.arange(30), np.arange(30, 40)
    matcher = CatalogueMatcher(dim, 16, projection_dim=32, temperature=0.1)
    trained = np.isin(labels, seen)
    losses = matcher.fit_entries(photos[trained], labels[trained], catalogue[seen], descriptions[seen], epochs=40)
    assert losses[-1] < losses[0] / 2
    held = np.isin(labels, new)
    truth = labels[held] - 30
    learned = np.mean(matcher.similarities(photos[held], catalogue[new], descriptions[new]).argmax(1) == truth)
    plain = np.mean(nearest_catalogue_image(photos[held], catalogue[new]).argmax(1) == truth)
    assert learned > 0.8 and learned > plain + 0.3, (learned, plain)


def test_image_recipe_reports_coarse_classes_for_an_image_list(shop, tmp_path):
    from image_data import tiny_efficientnet_preset

    from tl_keras.cli.main import main as cli

    folder, _ = shop
    preset = tiny_efficientnet_preset(tmp_path / "preset")
    assert cli(["train-image", "--train", str(folder / "train.txt"), "--backbone", str(preset), "--image-size", "64",
                "--epochs", "1", "--output-dir", str(tmp_path / "run"), "--no-resume"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    test = metrics["hierarchy"]["test"]
    assert test["coarse_accuracy"] >= test["fine_accuracy"] and len(test["fallback"]) == 21
    assert test["fine_accuracy"] == pytest.approx(metrics["test"]["accuracy"])
    assert (tmp_path / "run" / "fallback.png").stat().st_size > 1000


def test_recognizer_adds_new_products_from_their_entry_and_serves_them(tmp_path, tiny_bert_preset):
    import tensorflow as tf
    from conftest import SAVED_MODEL_CLI
    from image_data import tiny_efficientnet_preset

    from tl_keras.data.catalogue import CatalogueEntry
    from tl_keras.data.sample_images import CLASS_NAMES
    from tl_keras.tasks.catalogue_recognizer import CatalogueRecognizer

    folder = write_sample_images(tmp_path / "photos", per_class=8, size=48, samples=tuple(CLASS_NAMES))
    photos = {name: sorted(str(p) for p in (folder / name).iterdir()) for name in CLASS_NAMES.values()}
    entries = [CatalogueEntry(name, "shop", 0, files[0], f"the {name} product") for name, files in photos.items()]
    seen, new = entries[:4], entries[4:]
    recognizer = CatalogueRecognizer.from_preset(tiny_efficientnet_preset(tmp_path / "image"), tiny_bert_preset,
                                                 image_size=32, sequence_length=16, projection_dim=16)
    train = [(path, entry.name) for entry in seen for path in photos[entry.name][1:]]
    losses = recognizer.fit([p for p, _ in train], [label for _, label in train], seen, epochs=20).history["loss"]
    assert losses[-1] < losses[0]
    held_out = [(path, entry.name) for entry in new for path in photos[entry.name][1:]]
    assert set(recognizer.predict_labels([p for p, _ in held_out])) <= {e.name for e in seen}
    recognizer.add_entries(new)  # No photos of these, no retraining.
    predicted = recognizer.predict_labels([p for p, _ in held_out])
    assert np.mean([p == truth for p, (_, truth) in zip(predicted, held_out)]) >= 0.5  # Chance: 1/6.
    with pytest.raises(ValueError, match=r"already present or given twice: \['galaxies'\]"):
        recognizer.add_entries([new[0]])
    with pytest.raises(ValueError, match=r"2 entries were added after `fit` and `calibrate` has not run"):
        recognizer.export(tmp_path / "uncalibrated", "products")  # Served, the new entries would never win.
    assert not (tmp_path / "uncalibrated").exists()
    # Calibrated stacking on other crops: the trained entries give up a score.
    more = write_sample_images(tmp_path / "more", per_class=3, size=48, seed=7, samples=tuple(CLASS_NAMES))
    calibration = [(str(path), name) for name in CLASS_NAMES.values() for path in sorted((more / name).iterdir())]
    table = recognizer.calibrate([p for p, _ in calibration], [label for _, label in calibration],
                                 biases=[0.0, 0.05, 0.1, 0.2, 0.4])
    best = max(table, key=lambda row: row["harmonic_mean"])
    assert recognizer.seen_bias == best["bias"] and best["harmonic_mean"] >= table[0]["harmonic_mean"]
    recognizer.seen_bias = 0.1  # Whatever was chosen, the bias must reach the preset and the SavedModel.
    np.testing.assert_allclose(recognizer.entry_bias, [0.1] * 4 + [0.0] * 2)
    with pytest.raises(ValueError, match=r"needs photos of trained entries and of added ones; received 4 of "
                                         r"trained and 0 of added"):
        recognizer.calibrate([p for p, _ in train[:4]], [label for _, label in train[:4]])
    predicted = recognizer.predict_labels([p for p, _ in held_out])
    scores = recognizer.predict([p for p, _ in held_out])
    recognizer.save_to_preset(tmp_path / "saved")
    loaded = CatalogueRecognizer.from_preset(tmp_path / "saved")
    with pytest.raises(ValueError, match=r"saved CatalogueRecognizer.*cannot apply image_weight=0.5"):
        CatalogueRecognizer.from_preset(tmp_path / "saved", image_weight=0.5)
    assert loaded.entry_names == recognizer.entry_names and loaded.seen_bias == 0.1 and loaded.num_trained == 4
    assert loaded.calibrated  # Kept with the preset, so the loaded recognizer exports.
    np.testing.assert_allclose(loaded.predict([p for p, _ in held_out]), scores, rtol=1e-5, atol=1e-6)
    version = loaded.export(tmp_path / "exports", "products", k=3)
    served = tf.saved_model.load(str(version))
    answer = served.signatures["serving_default"](
        image_bytes=tf.constant([open(p, "rb").read() for p, _ in held_out]))
    assert answer["product"].numpy().astype(str).tolist() == predicted
    np.testing.assert_allclose(answer["score"].numpy(), scores.max(axis=1), rtol=1e-4, atol=1e-5)
    assert answer["products"].shape == (len(held_out), 3)
    embedded = served.signatures["embed_entries"](
        catalogue_image_bytes=tf.constant([open(new[0].image, "rb").read()]), description=tf.constant([new[0].description]))
    np.testing.assert_allclose(embedded["image_features"].numpy(), recognizer.entry_image_features[4:5], rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(embedded["text_features"].numpy(), recognizer.entry_text_features[4:5], rtol=1e-4,
                               atol=1e-5)
    card = json.loads((version / "model_card.json").read_text())
    assert card["entries"] == recognizer.entry_names and card["task"] == "catalogue_recognition"
    assert card["seen_bias"] == 0.1 and card["trained_entries"] == 4
    # saved_model_cli loads the SavedModel into a TF1 session, as TF Serving does.
    np.save(tmp_path / "request.npy", np.array([open(held_out[0][0], "rb").read()]))
    ran = subprocess.run([*SAVED_MODEL_CLI, "run", "--dir", str(version), "--tag_set", "serve", "--signature_def",
                          "serving_default", "--inputs", f"image_bytes={tmp_path}/request.npy", "--outdir",
                          str(tmp_path)], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "score.npy"), scores.max(axis=1)[:1], rtol=1e-4, atol=1e-5)


def test_bundled_grocery_slice_is_the_image_recipes_default_and_its_splits_share_no_photo():
    import pathlib
    import sys

    slice_folder = pathlib.Path(__file__).resolve().parent.parent / "data" / "grocery_slice"
    catalogue = read_catalogue(slice_folder / "classes.csv")
    splits = {name: read_image_list(slice_folder / f"{name}.txt", catalogue) for name in ("train", "val", "test")}
    assert {name: len(rows) for name, rows in splits.items()} == {"train": 96, "val": 24, "test": 22}
    assert all(set(rows.labels) == set(catalogue.names) for rows in splits.values())
    assert len(set(catalogue.coarse_of.values())) == 4
    files = {name: set(rows.texts) for name, rows in splits.items()}
    assert not files["train"] & (files["val"] | files["test"]) and not files["val"] & files["test"]
    assert all("/val/" in path for path in files["val"] | files["test"])  # The official val split's photos.
    assert (slice_folder / "LICENSE").read_text().startswith("MIT License")
    sys.path.insert(0, str(slice_folder.parent.parent / "recipes"))
    try:
        import image_classification as recipe
    finally:
        sys.path.pop(0)
    assert [recipe.DEFAULTS[key] for key in ("train", "validation", "test")] == [
        str(slice_folder / f"{name}.txt") for name in ("train", "val", "test")]
