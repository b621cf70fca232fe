"""DP-SGD: the per-example clipping bound, the accountant against
dp-accounting called directly, noise that drowns learning and no noise that
equals plain training, one noise draw per global batch on two replicas, and
the membership-inference audit."""

import math
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tl_keras.evaluation.privacy_audit import membership_audit, roc_auc, tpr_at_fpr
from tl_keras.models.heads import build_head
from tl_keras.training.config import TrainingConfig
from tl_keras.training.privacy import (RDP_ORDERS, Privacy, PrivateTraining, clipped_gradients, epsilon_spent,
                                       noise_for_epsilon, plan)

HERE = pathlib.Path(__file__).resolve().parent


def _data(count=256, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count, 16)).astype("float32")
    return x, (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int32")


def test_every_examples_gradient_is_clipped_to_the_bound():
    x, y = _data(32)
    x[:8] *= 20.0  # Some examples with large gradients.
    head = build_head(16, 2, "classification", hidden_dim=8, dropout=0.0)
    loss = keras.losses.SparseCategoricalCrossentropy()
    variables = head.trainable_variables
    clip = 0.25
    clipped = clipped_gradients(head, loss, variables, tf.constant(x), tf.constant(y), clip)
    norms = np.sqrt(sum(np.sum(np.square(g.numpy()), axis=tuple(range(1, g.ndim))) for g in clipped))
    assert norms.shape == (32,) and norms.max() <= clip + 1e-5
    scaled = 0
    for row in range(32):  # Each row against its own gradient, computed alone.
        with tf.GradientTape() as tape:
            value = loss(y[row:row + 1], head(x[row:row + 1], training=True))
        own = tape.gradient(value, variables)
        own_norm = math.sqrt(sum(float(tf.reduce_sum(g * g)) for g in own))
        factor = min(1.0, clip / own_norm) if own_norm else 1.0
        scaled += factor < 1.0
        for mine, theirs in zip(clipped, own):
            np.testing.assert_allclose(mine[row].numpy(), factor * theirs.numpy(), atol=1e-6)
    assert 0 < scaled < 32  # Both kinds were there: scaled down to the bound, and left as they were.


def test_the_accountant_is_dp_accounting_called_directly():
    import dp_accounting

    for noise, rate, steps, delta in [(1.1, 0.01, 1000, 1e-5), (0.8, 64 / 1200, 190, 1 / 12000)]:
        event = dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(noise)), steps)
        direct = dp_accounting.rdp.RdpAccountant(RDP_ORDERS)
        direct.compose(event)
        assert epsilon_spent(noise, rate, steps, delta) == pytest.approx(direct.get_epsilon(delta), rel=1e-12)
        pld = dp_accounting.pld.PLDAccountant()  # A second accountant: RDP is an upper bound of it.
        pld.compose(event)
        assert pld.get_epsilon(delta) <= epsilon_spent(noise, rate, steps, delta) * 1.001
    noise = noise_for_epsilon(3.0, 0.05, 400, 1e-5)
    assert epsilon_spent(noise, 0.05, 400, 1e-5) <= 3.0 < epsilon_spent(noise / 1.01, 0.05, 400, 1e-5)
    with pytest.raises(ValueError, match=r"No noise multiplier up to 1000 keeps"):
        noise_for_epsilon(1e-9, 0.5, 10_000, 1e-5)


def test_the_plan_counts_every_step_and_states_its_sampling():
    config = TrainingConfig(batch_size=64, dp_epsilon=3.0)
    privacy, report = plan(config, rows=1000, epochs=5)
    assert report["steps"] == 5 * 16 and report["delta"] == pytest.approx(1e-4) and privacy.clip == 1.0
    assert report["epsilon"] <= 3.0 and report["epsilon"] == epsilon_spent(privacy.noise_multiplier, 0.064, 80, 1e-4)
    assert "Poisson" in report["sampling"]
    with pytest.raises(ValueError, match=r"Give `dp_noise` or `dp_epsilon`, not both"):
        plan(TrainingConfig(dp_noise=1.0, dp_epsilon=3.0), 100, 1)
    with pytest.raises(ValueError, match=r"needs `dp_epsilon` \(a budget\) or `dp_noise`.*dp_clip=2.0"):
        plan(TrainingConfig(dp_clip=2.0), 100, 1)
    with pytest.raises(ValueError, match=r"`dp_delta` must be a number in \(0, 1\), received 1.5"):
        TrainingConfig(dp_delta=1.5)


def _fit(privacy, x, y, epochs=3):
    head = build_head(16, 2, "classification", dropout=0.0)
    rng = np.random.default_rng(3)  # The same start every time (Keras' global seed state moves on between tests).
    head.set_weights([rng.normal(0, 0.3, w.shape).astype("float32") for w in head.get_weights()])
    model = head if privacy is None else PrivateTraining(head, privacy)
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss=keras.losses.SparseCategoricalCrossentropy(),
                  metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=epochs, shuffle=False, verbose=0)
    return head


def test_no_noise_and_no_clipping_is_plain_training_and_huge_noise_learns_nothing():
    x, y = _data()
    plain = _fit(None, x, y)
    unclipped = _fit(Privacy(clip=1e6, noise_multiplier=0.0), x, y)
    for a, b in zip(plain.get_weights(), unclipped.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    test_x, test_y = _data(512, seed=9)

    def accuracy(head):
        return float(np.mean(head.predict(test_x, verbose=0).argmax(-1) == test_y))

    assert accuracy(plain) > 0.9
    drowned = [accuracy(_fit(Privacy(clip=1.0, noise_multiplier=1000.0), x, y, epochs=1)) for _ in range(1)]
    assert drowned[0] < 0.75  # Chance is about 0.5; the signal is 1/1000 of the noise.


def test_noise_is_drawn_once_per_global_batch_on_two_replicas(tmp_path):
    subprocess.run([sys.executable, str(HERE / "private_mirrored.py"), str(tmp_path)], check=True, timeout=600)
    saved = np.load(tmp_path / "private.npz")
    np.testing.assert_allclose(saved["two"], saved["one"], atol=1e-5)  # The clipped sum over the global batch.
    expected = float(saved["deviation"]) / float(saved["batch"])  # One draw of std σC, over the global batch.
    assert np.std(saved["idle"]) == pytest.approx(expected, rel=0.05)  # Two draws would be √2 times it.


def test_the_audit_finds_memorised_rows_and_not_others():
    rng = np.random.default_rng(0)
    targets = rng.integers(0, 2, 400)

    def probabilities(confidence):
        p = np.where(np.arange(2)[None] == targets[:, None], confidence[:, None], 1 - confidence[:, None])
        return p / p.sum(axis=1, keepdims=True)

    members = probabilities(rng.uniform(0.9, 1.0, 400))  # Memorised: confident on every training row.
    unseen = probabilities(rng.uniform(0.3, 1.0, 400))
    leaked = membership_audit(members, targets, unseen, targets)
    assert leaked["loss_threshold"]["auc"] > 0.8 and leaked["class_calibrated"]["auc"] > 0.8
    same = membership_audit(probabilities(rng.uniform(0.3, 1.0, 400)), targets, unseen, targets)
    assert abs(same["loss_threshold"]["auc"] - 0.5) < 0.07 and same["loss_threshold"]["tpr_at_1pct_fpr"] < 0.05
    assert roc_auc(np.array([3.0, 2.0]), np.array([1.0, 2.0])) == pytest.approx(0.875)  # A tie counts half.
    assert tpr_at_fpr(np.arange(100.0), np.arange(100.0)) == pytest.approx(0.0, abs=0.011)


def test_private_fit_through_the_backbone_and_the_recipe_reports_privacy_and_audit(tiny_bert_preset, tmp_path,
                                                                                 capsys):
    import json

    from conftest import separable_sentences, write_tsv

    from tl_keras import TextClassifier

    texts, labels = separable_sentences(48, seed=4)
    classifier = TextClassifier.from_preset(tiny_bert_preset, labels=["neg", "pos"], strategy="lora:2",
                                            sequence_length=16, pooling="mean")
    before = {w.path: w.numpy().copy() for w in classifier.backbone.weights}
    history = classifier.fit(texts, labels, batch_size=16, epochs=2, verbose=0, dp_epsilon=8.0,
                             backbone_learning_rate=1e-2)
    spent = classifier.privacy
    # A private linear probe first (`warmup_epochs`, 1 by default), then LoRA: one budget over both phases.
    assert history.history["phase"] == ["head", "lora", "lora"]
    assert spent["steps"] == (1 + 2) * 3 and spent["epsilon"] <= 8.0 and spent["delta"] == pytest.approx(1 / 480)
    after = {w.path: w.numpy() for w in classifier.backbone.weights}
    assert any(not np.allclose(before[path], after[path]) for path in before.keys() & after.keys())  # LoRA merged.
    assert classifier.card()["privacy"]["epsilon"] == spent["epsilon"]
    with pytest.raises(ValueError, match=r"Self-training has no DP-SGD accounting"):
        classifier.self_train(texts[:8], dp_epsilon=8.0)
    with pytest.raises(ValueError, match=r"The coral phase has no DP-SGD accounting"):
        TextClassifier.from_preset(tiny_bert_preset, labels=["neg", "pos"], strategy="partial:1", sequence_length=16
                                   ).fit_adapted(texts, labels, texts[:8], "coral", dp_noise=1.0)

    sys.path.insert(0, str(HERE.parent / "recipes"))
    import text_classification as recipe

    train = write_tsv(tmp_path / "train.tsv", *separable_sentences(60, seed=5))
    recipe.main(["--train", str(train), "--backbone", tiny_bert_preset, "--strategy", "frozen", "--epochs", "3",
                 "--sequence-length", "16", "--dp-epsilon", "3", "--dp-clip", "0.5", "--audit",
                 "--output-dir", str(tmp_path / "run"), "--export-dir", str(tmp_path / "exports"), "--verbose", "0"])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert metrics["privacy"]["epsilon"] <= 3.0 and metrics["privacy"]["clip"] == 0.5
    assert {"loss_threshold", "class_calibrated"} <= set(metrics["audit"])
    assert 0.0 <= metrics["audit"]["loss_threshold"]["auc"] <= 1.0
    out = capsys.readouterr().out
    assert "privacy: (ε = " in out and "membership audit (train vs test rows)" in out
    card = json.loads(next((tmp_path / "exports").glob("*/1/model_card.json")).read_text())
    assert card["metrics"]["privacy"]["epsilon"] == metrics["privacy"]["epsilon"]
