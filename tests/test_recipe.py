"""The text recipe end to end on a tiny preset: flags, YAML, report, export."""

import json
import pathlib
import subprocess
import sys

import pytest
import tensorflow as tf

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "recipes"))
import text_classification as recipe  # noqa: E402


def test_recipe_trains_reports_and_exports(tiny_bert_preset, sentiment_files, tmp_path):
    train, validation = sentiment_files
    config = tmp_path / "run.yaml"
    config.write_text(f"train: {train}\nvalidation: {validation}\nstrategy: frozen\nepochs: 1\nbatch_size: 8\n")
    recipe.main(["--config", str(config), "--backbone", tiny_bert_preset, "--epochs", "6",
                 "--strategy", "full", "--pooling", "mean", "--head-learning-rate", "0.01",
                 "--backbone-learning-rate", "0.001", "--sequence-length", "32",
                 "--output-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "exports"),
                 "--model-name", "tiny", "--verbose", "0"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["history"]["phase"] == ["head"] + ["full"] * 6  # The flags beat the YAML.
    assert metrics["metrics"]["validation"]["examples"] == 32  # The validation file.
    assert metrics["metrics"]["test"]["examples"] == 20  # 20% of the training file, never trained on.
    assert metrics["metrics"]["validation"]["split"] == "validation" and metrics["metrics"]["test"]["split"] == "test"
    assert metrics["metrics"]["validation"]["accuracy"] > 0.8 and metrics["metrics"]["test"]["accuracy"] > 0.7
    assert (tmp_path / "run" / "confusion_matrix.png").stat().st_size > 0
    assert (tmp_path / "run" / "learning_curve.png").stat().st_size > 0
    card = json.loads((tmp_path / "exports" / "tiny" / "1" / "model_card.json").read_text())
    assert card["strategy"] == "full" and card["labels"] == ["neg", "pos"]
    assert card["metrics"]["test"]["accuracy"] == metrics["metrics"]["test"]["accuracy"]
    served = tf.saved_model.load(str(tmp_path / "exports" / "tiny" / "1")).signatures["serving_default"]
    labels = served(text=tf.constant(["great good phone", "awful bad case"]))["label"].numpy()
    assert labels.tolist() == [b"pos", b"neg"]


def test_recipe_refuses_unknown_yaml_setting(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match=r"unknown settings \['epochz'\]"):
        recipe.main(["--config", str(config)])


def test_recipe_stops_on_bad_data_before_training(tiny_bert_preset, tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("good phone\tpos\n\tneg\n")
    result = subprocess.run([sys.executable, str(REPO / "recipes" / "text_classification.py"), "--train", str(bad),
                             "--backbone", tiny_bert_preset, "--output-dir", str(tmp_path / "run")],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"error: {bad}:2: empty text (received '')."
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "backup").exists()


def test_recipe_is_short():
    assert len((REPO / "recipes" / "text_classification.py").read_text().splitlines()) < 150
