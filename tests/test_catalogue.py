"""Product catalogues (the Grocery Store layout), fine and coarse labels with
the coarse fallback by hand, the cold-start catalogue matcher on a planted
domain shift, and the image recipe on an image list with a catalogue."""

import json

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
