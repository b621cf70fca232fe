"""DANN and CORAL: the reversal's gradient, λ's schedule, and a planted shift
that adaptation undoes and source-only training does not."""

import numpy as np
import pytest
import tensorflow as tf

from tl_keras.transfer.domain_adaptation import (
    DannSchedule,
    GradientReversal,
    adapt,
    build_adaptation_models,
    coral_loss,
    dann_lambda,
)


def test_gradient_reversal_negates_and_scales_the_gradient():
    layer = GradientReversal()
    x = tf.constant([[1.0, -2.0, 3.0]])
    layer.build(x.shape)
    layer.scale.assign(0.25)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * tf.constant([[2.0, 3.0, 4.0]]))
    np.testing.assert_array_equal(y.numpy(), x.numpy())  # Identity forward.
    np.testing.assert_allclose(tape.gradient(loss, x).numpy(), [[-0.5, -0.75, -1.0]])


def test_lambda_follows_its_schedule_during_training():
    assert dann_lambda(0.0) == 0.0
    assert dann_lambda(0.5) == pytest.approx(2 / (1 + np.exp(-5)) - 1)
    assert dann_lambda(1.0) == pytest.approx(1.0, abs=1e-4)
    values = [dann_lambda(p / 10) for p in range(11)]
    assert values == sorted(values)
    trainer, _, reversal = build_adaptation_models(4, 2, "dann", hidden_dim=8)
    seen = []

    class Record(DannSchedule):
        def on_train_batch_begin(self, batch, logs=None):
            super().on_train_batch_begin(batch, logs)
            seen.append(float(reversal.scale.numpy()))

    schedule = Record(reversal, epochs=2, steps_per_epoch=5, alpha=10.0)
    trainer.compile("adam", "sparse_categorical_crossentropy")
    x = np.zeros((4, 4), "float32")
    data = tf.data.Dataset.from_tensors(({"source": x, "target": x}, np.zeros(4, "int32")))
    trainer.fit(data.repeat(), epochs=2, steps_per_epoch=5, callbacks=[schedule], verbose=0)
    np.testing.assert_allclose(seen, [dann_lambda(step / 10) for step in range(10)], rtol=1e-6)


def test_coral_loss_is_zero_for_equal_covariance_and_grows_with_difference():
    rng = np.random.default_rng(0)
    source = rng.normal(size=(500, 3)).astype("float32")
    assert float(coral_loss(source, source + 5.0)) == pytest.approx(0.0, abs=1e-6)  # Means do not count.
    assert float(coral_loss(source, source * 3.0)) > 10 * float(coral_loss(source, source * 1.1))


def planted_shift(count, seed):
    """Two features carry the class equally. In the target domain the first
    is shifted so far that it points to the wrong class for half the rows;
    the second is the same in both domains."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, count)
    sign = 2.0 * labels - 1.0
    first = 1.0 * sign + 0.3 * rng.normal(size=count)
    second = 1.0 * sign + 0.3 * rng.normal(size=count)
    noise = rng.normal(size=(count, 2))
    source = np.column_stack([first, second, noise]).astype("float32")
    target = source.copy()
    target[:, 0] += 3.0
    return source, target, labels.astype("int32")


def _accuracy(head, features, labels):
    return float(np.mean(head.predict(features, verbose=0).argmax(axis=1) == labels))


def test_adaptation_beats_source_only_on_a_planted_shift():
    source, _, source_labels = planted_shift(600, seed=1)
    _, target, target_labels = planted_shift(600, seed=2)
    settings = dict(num_classes=2, epochs=30, batch_size=64, hidden_dim=16, learning_rate=3e-3)
    baseline, _ = adapt(source, source_labels, target, method="source_only", **settings)
    dann, history = adapt(source, source_labels, target, method="dann", **settings)
    assert _accuracy(baseline, source, source_labels) > 0.95
    baseline_target = _accuracy(baseline, target, target_labels)
    dann_target = _accuracy(dann, target, target_labels)
    assert baseline_target < 0.7
    assert dann_target > baseline_target + 0.15
    # One DANN: the frozen-feature trainer's domain loss is `DomainConfusion`'s,
    # the layer `fit_adapted` puts behind the fine-tuned encoder.
    trainer, _, _ = build_adaptation_models(4, 2, "dann", hidden_dim=8)
    assert [type(layer).__name__ for layer in trainer.layers].count("DomainConfusion") == 1
    assert len(history["domain_loss"]) == 30
    assert history["domain_loss"][-1] > 0.5  # Near log 2: the adapter hid the domain from the classifier.


def test_coral_and_dann_adapt_through_the_unfrozen_backbone(tiny_bert_preset):
    from conftest import FILLER, separable_sentences

    from tl_keras import TextClassifier
    from tl_keras.transfer.domain_adaptation import coral_loss

    texts, labels = separable_sentences(64, seed=1)
    # The target domain: other filler words, and a word the source never has.
    target = [" ".join(["battery", "battery"] + [w for w in t.split() if w not in FILLER[:5]]) for t in
              separable_sentences(64, seed=2)[0]]

    def covariance_gap(classifier):
        encoder = classifier.encoder
        features = [classifier.tokenize(x).predict(encoder) for x in (texts, target)]
        return float(coral_loss(*features))

    def trained(method, weight):
        classifier = TextClassifier.from_preset(tiny_bert_preset, labels=["neg", "pos"], strategy="partial:1",
                                                sequence_length=32, pooling="mean")
        stem = classifier.backbone.get_layer("token_embedding").embeddings.numpy().copy()
        top = classifier.backbone.transformer_layers[-1].weights[0].numpy().copy()
        history = classifier.fit_adapted(texts, labels, target, method=method, epochs=8, batch_size=16,
                                         backbone_learning_rate=1e-3, adaptation_weight=weight, seed=0)
        assert len(history.history["loss"]) == 8
        np.testing.assert_array_equal(stem, classifier.backbone.get_layer("token_embedding").embeddings.numpy())
        assert not np.allclose(top, classifier.backbone.transformer_layers[-1].weights[0].numpy())
        return classifier

    # The same steps with and without the penalty: it aligns the domains
    # through the top block.
    adapted = trained("coral", 1e6)
    assert covariance_gap(adapted) < 0.5 * covariance_gap(trained("coral", 0.0))
    # DANN through the backbone runs in the recipe test (test_adaptation_recipes).
    with pytest.raises(ValueError, match=r"must be 'coral' or 'dann' to adapt through the backbone, received 'mmd'"):
        adapted.fit_adapted(texts, labels, target, method="mmd")


def test_self_training_over_features_follows_the_target_and_keeps_the_source():
    from tl_keras.transfer.self_training import self_train_head

    source, _, source_labels = planted_shift(600, seed=1)
    _, target, target_labels = planted_shift(600, seed=2)
    target[:, 0] -= 1.0  # A milder shift than above: the source model is right on about two thirds of the rows.
    settings = dict(epochs=30, batch_size=64, hidden_dim=16, learning_rate=3e-3)
    head, _ = adapt(source, source_labels, target, 2, "source_only", **settings)
    before = _accuracy(head, target, target_labels)
    rounds = self_train_head(head, source, source_labels, target, shares=(0.6, 0.9), epochs=10, batch_size=64,
                             learning_rate=3e-3)
    after = _accuracy(head, target, target_labels)
    assert before < 0.75
    assert after > 0.95  # Its confident target rows, labelled by itself, pull it to the target's boundary.
    assert _accuracy(head, source, source_labels) > 0.9  # Trained on the source rows too, not on guesses alone.
    # At most 180 rows a predicted class in the first round (60% of 600, balanced).
    assert rounds[0]["share"] == 0.6 and 0 < rounds[0]["selected"] <= 360
