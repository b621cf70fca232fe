"""The domain-adaptation, continued-pretraining and model-fusion recipes end
to end on a tiny preset and synthetic text domains."""

import json
import pathlib
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import FILLER, NEGATIVE, POSITIVE, write_tsv

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "recipes"))
import continued_pretraining  # noqa: E402
import domain_adaptation  # noqa: E402
import model_fusion  # noqa: E402

from tl_keras.models.backbones import load_text_backbone  # noqa: E402
from tl_keras.data.texts import DataError, read_texts  # noqa: E402


def _domain(path, count, seed, filler):
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(count):
        label = ("neg", "pos")[i % 2]
        words = list(rng.choice(filler, size=6)) + [str(rng.choice(POSITIVE if label == "pos" else NEGATIVE))]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return str(write_tsv(path, texts, labels))


@pytest.mark.parametrize("method, strategy, epochs", [("coral", "frozen", 5), ("self_training", "frozen", 3),
                                                   ("dann", "partial:1", 2)])
def test_domain_adaptation_recipe_reports_both_methods_and_exports(tiny_bert_preset, tmp_path, method, strategy,
                                                                   epochs):
    source = _domain(tmp_path / "source.tsv", 96, 1, FILLER[:5])
    target = _domain(tmp_path / "target.tsv", 64, 2, FILLER[5:])
    domain_adaptation.main([
        "--source", source, "--target", target, "--target-validation", target, "--backbone", tiny_bert_preset,
        "--method", method, "--strategy", strategy, "--epochs", str(epochs), "--sequence-length", "32", "--pooling",
        "mean",
        "--output-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "exports"), "--verbose", "0"])
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    metrics = written["metrics"]["target"]
    assert set(metrics) == {"source_only", method}
    if strategy != "frozen":  # Fine-tuned with the adaptation loss, beside the baseline's epochs.
        assert len(written["history"][method]["loss"]) == epochs
    # The target file is also the labelled one: a quarter of it is the test.
    assert all(0.0 <= m["accuracy"] <= 1.0 and m["examples"] == 16 for m in metrics.values())
    served = tf.saved_model.load(str(tmp_path / "exports" / "adapted_classifier" / "1"))
    labels = served.signatures["serving_default"](text=tf.constant(["good the", "bad the"]))["label"].numpy()
    assert set(labels.tolist()) <= {b"neg", b"pos"}


@pytest.mark.parametrize("strategy", ["frozen", "partial:1"])
def test_without_target_labels_the_run_reports_how_far_it_moved_from_source_only(tiny_bert_preset, tmp_path, capsys,
                                                                                  strategy):
    source = _domain(tmp_path / "source.tsv", 96, 1, FILLER[:5])
    target = _domain(tmp_path / "target.tsv", 64, 2, FILLER[5:])
    domain_adaptation.main([
        "--source", source, "--target", target, "--target-validation", "", "--backbone", tiny_bert_preset,
        "--strategy", strategy,
        "--epochs", "2", "--sequence-length", "32", "--pooling", "mean", "--output-dir", str(tmp_path / "run"),
        "--verbose", "0"])
    changed = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["changed_from_source_only"]
    assert set(changed) == {"self_training"} and 0.0 <= changed["self_training"] <= 1.0
    assert "self_training changed" in capsys.readouterr().out


def test_self_training_recipe_holds_the_test_out_of_the_unlabelled_texts(tiny_bert_preset, tmp_path, capsys):
    source = _domain(tmp_path / "source.tsv", 96, 1, FILLER[:5])
    target = _domain(tmp_path / "target.tsv", 64, 2, FILLER[5:])
    domain_adaptation.main([
        "--source", source, "--target", target, "--target-validation", target, "--backbone", tiny_bert_preset,
        "--epochs", "2", "--sequence-length", "32", "--pooling", "mean", "--output-dir", str(tmp_path / "run"),
        "--export-dir", str(tmp_path / "exports"), "--verbose", "0"])
    assert "96 labelled source texts, 48 unlabelled target texts, 16 labelled target test texts" in \
        capsys.readouterr().out
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(written["metrics"]["target"]) == {"source_only", "self_training"}
    rounds = written["history"]["self_training"]
    # At most 0.6 x 48 = 28, 14 of each predicted class (fewer when one class is predicted less).
    assert [r["share"] for r in rounds] == [0.6, 0.9][: len(rounds)] and 0 < rounds[0]["selected"] <= 28
    assert (tmp_path / "exports" / "adapted_classifier" / "1" / "saved_model.pb").is_file()


def test_pretraining_on_the_target_texts_comes_before_the_method_and_is_reused(tiny_bert_preset, tmp_path, capsys):
    source = _domain(tmp_path / "source.tsv", 96, 1, FILLER[:5])
    target = _domain(tmp_path / "target.tsv", 64, 2, FILLER[5:])
    common = ["--source", source, "--target", target, "--target-validation", target, "--backbone", tiny_bert_preset,
              "--strategy", "partial:1", "--epochs", "1", "--pretraining-epochs", "2", "--sequence-length", "32",
              "--pooling", "mean", "--output-dir", str(tmp_path / "run"), "--verbose", "0"]
    domain_adaptation.main([*common, "--export-dir", str(tmp_path / "exports")])
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert list(written["metrics"]["target"]) == ["source_only", "pretraining", "pretraining+self_training"]
    assert len(written["history"]["pretraining"]["loss"]) == 2  # The masked LM's two epochs.
    presets = list((tmp_path / "run").glob("target_pretrained_*"))
    assert len(presets) == 1 and (presets[0] / "config.json").is_file()
    # The masked LM saw the unlabelled texts only: the 16 test rows are not among them.
    assert "48 unlabelled target texts, 16 labelled target test texts" in capsys.readouterr().out
    card = json.loads((tmp_path / "exports" / "adapted_classifier" / "1" / "model_card.json").read_text())
    assert card["adaptation"] == "pretraining+self_training"
    # The same texts and settings again: the pretrained backbone is reused, not trained twice.
    domain_adaptation.main([*common, "--method", "source_only"])
    out = capsys.readouterr().out
    assert f"reusing {presets[0]}" in out and "masked LM on 48" not in out
    assert list(json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]["target"]) == \
        ["source_only", "pretraining"]
    with pytest.raises(ValueError, match=r"`pretraining_epochs` goes with a fine-tuning strategy .* received "
                                         r"pretraining_epochs 1, strategy 'frozen' and method 'self_training'"):
        domain_adaptation.main([*common, "--strategy", "frozen", "--pretraining-epochs", "1",  # Later flags win.
                                "--output-dir", str(tmp_path / "bad")])


def test_few_target_labels_run_alone_joint_and_source_then_target(tiny_bert_preset, tmp_path):
    source = _domain(tmp_path / "source.tsv", 96, 1, FILLER[:5])
    target = _domain(tmp_path / "target.tsv", 64, 2, FILLER[5:])
    few = _domain(tmp_path / "few.tsv", 12, 3, FILLER[5:])
    common = ["--source", source, "--target", target, "--target-validation", target, "--backbone", tiny_bert_preset,
              "--epochs", "1", "--target-epochs", "2", "--sequence-length", "32", "--pooling", "mean", "--verbose",
              "0"]
    domain_adaptation.main([*common, "--method", "joint", "--target-labelled", few, "--target-weight", "3",
                            "--output-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "exports")])
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    metrics = written["metrics"]["target"]
    assert list(metrics) == ["source_only", "target_labelled_only", "joint", "source_then_target"]
    assert all(m["examples"] == 16 for m in metrics.values())
    assert (tmp_path / "exports" / "adapted_classifier" / "1" / "saved_model.pb").is_file()
    (tmp_path / "leak.tsv").write_text((tmp_path / "target.tsv").read_text())
    with pytest.raises(DataError, match=r"leak.tsv: 16 labelled target text\(s\) are also test texts"):
        domain_adaptation.main([*common, "--method", "source_then_target", "--target-labelled",
                                str(tmp_path / "leak.tsv"), "--output-dir", str(tmp_path / "leak")])
    with pytest.raises(ValueError, match=r"`target_labelled` goes with methods \('source_then_target', 'joint'\) "
                                         r"and they need it; received method 'joint' and target_labelled None"):
        domain_adaptation.main([*common, "--method", "joint", "--output-dir", str(tmp_path / "bad")])


def test_self_train_balances_pseudo_labels_and_stops_when_predictions_settle(tiny_bert_preset, tmp_path):
    from tl_keras import TextClassifier
    from tl_keras.transfer.self_training import changed_share, confident_pseudo_labels

    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7], [0.45, 0.55], [0.99, 0.01]])
    rows, labels = confident_pseudo_labels(probabilities, share=2 / 3)  # Two of each predicted class.
    assert rows.tolist() == [0, 3, 4, 5] and labels.tolist() == [0, 1, 1, 0]
    assert changed_share([0, 1, 1, 0], [0, 1, 0, 0]) == 0.25
    with pytest.raises(ValueError, match=r"`share` must be in \(0, 1\], received 0"):
        confident_pseudo_labels(probabilities, 0)
    texts = [f"{word} the" for word in POSITIVE + NEGATIVE] * 2
    labels = ["pos"] * len(POSITIVE) + ["neg"] * len(NEGATIVE)
    classifier = TextClassifier.from_preset(tiny_bert_preset, labels=["neg", "pos"], strategy="full",
                                            sequence_length=16)
    classifier.fit(texts, labels * 2, epochs=1, verbose=0)
    # Every round after the first changes fewer predictions than 101%: one round only.
    assert len(classifier.self_train(texts, shares=(0.5, 1.0), min_change=1.01)) == 1
    all_rounds = classifier.self_train(texts, shares=(0.5, 1.0), min_change=0.0)
    assert len(all_rounds) == 2 and all_rounds[0]["selected"] <= len(texts) // 2
    assert all_rounds[0]["selected"] < all_rounds[1]["selected"] <= len(texts)  # A growing share.
    assert 0.0 <= all_rounds[1]["changed"] <= 1.0


def test_continued_pretraining_recipe_writes_a_preset_every_recipe_loads(tiny_bert_preset, tmp_path, capsys):
    texts = _domain(tmp_path / "texts.tsv", 64, 3, FILLER)
    output = tmp_path / "adapted"
    continued_pretraining.main(["--texts", texts, "--backbone", tiny_bert_preset, "--output-preset", str(output),
                                "--epochs", "2", "--sequence-length", "32", "--backbone-learning-rate", "0.001"])
    assert "adapted preset:" in capsys.readouterr().out
    adapted, _ = load_text_backbone(str(output), 32)
    original, _ = load_text_backbone(tiny_bert_preset, 32)
    assert any(not np.allclose(a, b) for a, b in zip(adapted.get_weights(), original.get_weights()))
    assert not list(tmp_path.glob(".adapted.tmp-*"))
    with pytest.raises(FileExistsError, match="already exists"):
        continued_pretraining.main(["--texts", texts, "--backbone", tiny_bert_preset, "--output-preset", str(output)])


def test_model_fusion_recipe_reports_ingredients_soups_and_ensemble(tiny_bert_preset, tmp_path):
    train = _domain(tmp_path / "train.tsv", 160, 4, FILLER)
    model_fusion.main(["--train", train, "--backbone", tiny_bert_preset, "--ingredients", "2", "--strategy", "full",
                       "--epochs", "2", "--sequence-length", "32", "--output-dir", str(tmp_path / "run"),
                       "--export", "uniform", "--export-dir", str(tmp_path / "exports")])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert set(metrics) == {"ingredient_0", "ingredient_1", "uniform_soup", "greedy_soup", "ensemble"}
    assert metrics["uniform_soup"]["parameters"] == metrics["ingredient_0"]["parameters"]
    assert metrics["ensemble"]["parameters"] == 2 * metrics["ingredient_0"]["parameters"]
    assert metrics["greedy_soup"]["ingredients_kept"]
    assert (tmp_path / "exports" / "fused_classifier" / "1" / "saved_model.pb").exists()


def test_read_texts_takes_first_field_and_names_bad_lines(tmp_path):
    path = tmp_path / "texts.tsv"
    path.write_text("good phone\t1\nno label here\n")
    assert read_texts(path) == ["good phone", "no label here"]
    path.write_text("good\n \t1\n")
    with pytest.raises(DataError, match=r"texts.tsv:2: empty text"):
        read_texts(path)
