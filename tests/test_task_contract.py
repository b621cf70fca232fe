"""The task contract as a KerasHub user meets it: `num_classes` and integer
labels, a user's own `compile`, `.keras` files that `load_model` reads back,
Keras' `fit` order, `from_preset` overrides applied or given a new head (never
ignored), and the typed `encoder`/`head` every layer below reads."""

import keras
import numpy as np
import pytest

import tl_keras
from conftest import separable_sentences
from tl_keras.data.texts import sorted_names


def _classifier(preset, **settings):
    return tl_keras.TextClassifier.from_preset(preset, sequence_length=32, pooling="mean", **settings)


def test_num_classes_and_integer_labels_as_keras_hub_takes_them(tiny_bert_preset):
    texts, labels = separable_sentences(48, seed=6)
    y = np.array([1 if label == "pos" else 0 for label in labels])
    classifier = _classifier(tiny_bert_preset, num_classes=2)
    assert classifier.vocabulary.names == ("0", "1")
    history = classifier.fit(texts, y, 8, 30, 0, head_learning_rate=3e-2)  # Keras' order: batch_size, epochs, verbose.
    assert len(history.history["loss"]) == 30 and history.history["loss"][-1] < history.history["loss"][0]
    assert np.mean(classifier.predict(texts).argmax(-1) == y) > 0.7  # Chance 0.5; a wrong index mapping far less.
    named = _classifier(tiny_bert_preset, labels=["neg", "pos"])
    np.testing.assert_array_equal(named.targets(y), y)  # Integers are class indices into the names.
    np.testing.assert_array_equal(named.targets(["pos", "neg"]), [1, 0])
    with pytest.raises(ValueError, match=r"Integer label 2 is not a class index in \[0, 2\)"):
        named.targets([0, 2])
    with pytest.raises(ValueError, match=r"`num_classes=3` but 2 `labels`"):
        _classifier(tiny_bert_preset, labels=["neg", "pos"], num_classes=3)
    assert sorted_names([str(i) for i in range(12)])[:3] == ("0", "1", "2")  # Not "0", "1", "10".


def test_a_users_compile_is_what_fit_trains_with(tiny_bert_preset):
    texts, labels = separable_sentences(32, seed=7)
    classifier = _classifier(tiny_bert_preset, labels=["neg", "pos"], strategy="partial:1")
    optimizer = keras.optimizers.SGD(learning_rate=0.0)
    classifier.compile(optimizer=optimizer)
    before = [w.numpy().copy() for w in classifier.head.trainable_weights]
    classifier.fit(texts, labels, batch_size=8, epochs=1, verbose=0)
    assert classifier.optimizer is optimizer and int(optimizer.iterations.numpy()) == 4
    assert all(np.array_equal(b, w.numpy()) for b, w in zip(before, classifier.head.trainable_weights))  # lr 0.
    frozen = _classifier(tiny_bert_preset, labels=["neg", "pos"], strategy="frozen")
    frozen.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    frozen.fit(texts, labels, batch_size=8, epochs=1, verbose=0)  # The head phase on cached features.
    assert frozen.head.optimizer is frozen.compiled_by_user["optimizer"]
    plain = _classifier(tiny_bert_preset, labels=["neg", "pos"], strategy="partial:1")
    plain.fit(texts, labels, batch_size=8, epochs=1, verbose=0)
    assert type(plain.optimizer).__name__ == "DiscriminativeAdamW"  # Not compiled: the strategy's own.


def test_keras_files_round_trip_through_load_model(tiny_bert_preset, tmp_path):
    texts, labels = separable_sentences(32, seed=8)
    classifier = _classifier(tiny_bert_preset, labels=["neg", "pos"], strategy="partial:1", hidden_dim=8)
    classifier.fit(texts, labels, batch_size=8, epochs=1, verbose=0)
    classifier.save(tmp_path / "reviews.keras")
    loaded = keras.models.load_model(tmp_path / "reviews.keras")
    assert isinstance(loaded, tl_keras.TextClassifier) and loaded.vocabulary == classifier.vocabulary
    assert str(loaded.strategy) == "partial:1" and loaded.hidden_dim == 8
    np.testing.assert_allclose(loaded.predict(texts), classifier.predict(texts), atol=1e-5)


def test_image_keras_files_round_trip_through_load_model(tmp_path):
    from image_data import tiny_efficientnet_preset

    preset = tiny_efficientnet_preset(tmp_path / "preset")
    classifier = tl_keras.ImageClassifier.from_preset(preset, num_classes=3, image_size=32)
    pixels = np.random.default_rng(0).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    classifier.fit(pixels, [0, 1, 2, 0, 1, 2], batch_size=6, epochs=1, verbose=0)
    classifier.save(tmp_path / "photos.keras")
    loaded = keras.models.load_model(tmp_path / "photos.keras")
    assert isinstance(loaded, tl_keras.ImageClassifier) and loaded.image_size == (32, 32)
    np.testing.assert_allclose(loaded.predict(pixels), classifier.predict(pixels), atol=1e-5)


def test_from_preset_applies_or_gives_a_new_head_never_ignores(tiny_bert_preset, tmp_path):
    texts, labels = separable_sentences(32, seed=9)
    classifier = _classifier(tiny_bert_preset, labels=["neg", "pos"], strategy="partial:1")
    classifier.fit(texts, labels, batch_size=8, epochs=1, verbose=0)
    classifier.save_to_preset(tmp_path / "saved")
    head = classifier.head.get_weights()
    restored = tl_keras.TextClassifier.from_preset(tmp_path / "saved", dropout=0.3, sequence_length=16)
    assert restored.dropout == 0.3 and restored.preprocessor.sequence_length == 16
    assert all(np.array_equal(a, b) for a, b in zip(restored.head.get_weights(), head))  # The saved head.
    wider = tl_keras.TextClassifier.from_preset(tmp_path / "saved", hidden_dim=8)
    assert wider.hidden_dim == 8 and wider.vocabulary == classifier.vocabulary  # A new head, saved labels.
    assert len(wider.head.get_weights()) == len(head) + 2


def test_image_from_preset_with_new_labels_is_sequential_transfer(tmp_path):
    from image_data import tiny_efficientnet_preset

    preset = tiny_efficientnet_preset(tmp_path / "preset")
    pixels = np.random.default_rng(1).integers(0, 255, (6, 32, 32, 3), dtype=np.uint8)
    classifier = tl_keras.ImageClassifier.from_preset(preset, labels=["bag", "shoe"], image_size=32)
    classifier.fit(pixels, ["bag", "shoe"] * 3, batch_size=6, epochs=1, verbose=0)
    classifier.save_to_preset(tmp_path / "shop_a")
    other = tl_keras.ImageClassifier.from_preset(tmp_path / "shop_a", labels=["bottle", "can", "jar"], hidden_dim=4)
    assert other.vocabulary.names == ("bottle", "can", "jar") and other.head.output.shape[-1] == 3
    assert other.hidden_dim == 4 and other.image_size == (32, 32)
    same = tl_keras.ImageClassifier.from_preset(tmp_path / "shop_a", image_size=48, dropout=0.2)
    assert same.image_size == (48, 48) and same.dropout == 0.2
    np.testing.assert_array_equal(same.head.get_weights()[0], classifier.head.get_weights()[0])


def test_evaluate_report_takes_the_history_fit_returned(tiny_bert_preset, tmp_path):
    texts, labels = separable_sentences(24, seed=10)
    classifier = _classifier(tiny_bert_preset, labels=["neg", "pos"])
    history = classifier.fit(texts, labels, batch_size=8, epochs=2, verbose=0)
    metrics = classifier.evaluate_report(texts, labels, tmp_path / "report", split="train", history=history)
    assert metrics["split"] == "train" and (tmp_path / "report" / "learning_curve.png").is_file()


def test_a_notebook_export_warms_up_and_names_its_backbone_and_metrics(tiny_bert_preset, tmp_path):
    import json

    from tl_keras.serving.tf_serving_files import check_warmup

    texts, labels = separable_sentences(24, seed=13)
    classifier = _classifier(tiny_bert_preset, labels=["neg", "pos"])
    classifier.fit(texts, labels, batch_size=8, epochs=1, verbose=0)
    classifier.evaluate_report(texts[:8], labels[:8], split="validation")
    version = classifier.export(tmp_path, "reviews")  # No warm-up texts given.
    assert check_warmup(version / "assets.extra" / "tf_serving_warmup_requests") == 1
    card = json.loads((version / "model_card.json").read_text())
    assert card["backbone"] == str(tiny_bert_preset) and card["metrics"]["validation"]["split"] == "validation"


def test_every_task_exports_with_one_argument_order():
    import inspect

    from tl_keras.tasks.base import TransferTask

    def subclasses(cls):
        return {cls, *(s for sub in cls.__subclasses__() for s in subclasses(sub))}

    for name in tl_keras.__all__:  # The package imports its tasks lazily.
        getattr(tl_keras, name)

    tasks = [task for task in subclasses(TransferTask) if "export" in vars(task)]
    assert len(tasks) >= 7, sorted(task.__name__ for task in tasks)  # Classifiers, reader, retrieval, generator...
    for task in tasks:
        parameters = list(inspect.signature(task.export).parameters)
        assert parameters[:6] == ["self", "export_dir", "model_name", "version", "warmup", "card"], task.__name__
