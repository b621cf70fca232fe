"""The task models: built from presets, `fit` on raw inputs, `predict_labels`,
and `save_to_preset` → `from_preset` giving identical outputs, for every task."""

import numpy as np
import pytest

import tl_keras
from conftest import separable_sentences
from tl_keras.data.interactions import time_ordered_split
from tl_keras.data.texts import DataError
from tl_keras.data.synthetic_shop import make_synthetic_shop


@pytest.mark.parametrize("strategy", ["frozen", "partial:1", "lora:2"])
def test_text_classifier_fits_raw_texts_and_round_trips_a_preset(tiny_bert_preset, tmp_path, strategy):
    texts, labels = separable_sentences(64, seed=3)
    classifier = tl_keras.TextClassifier.from_preset(tiny_bert_preset, labels=["neg", "pos"], strategy=strategy,
                                                     sequence_length=32, pooling="mean")
    history = classifier.fit(texts, labels, validation_data=(texts[:16], labels[:16]), epochs=3, batch_size=8,
                             verbose=0, head_learning_rate=1e-2, backbone_learning_rate=1e-3)
    assert len(history.history["loss"]) == 3 and min(history.history["loss"][1:]) < history.history["loss"][0]
    assert set(classifier.predict_labels(texts[:8])) <= {"neg", "pos"}
    classifier.save_to_preset(tmp_path / "saved")
    loaded = tl_keras.TextClassifier.from_preset(tmp_path / "saved")
    assert loaded.vocabulary == classifier.vocabulary and loaded.pooling == "mean"
    np.testing.assert_allclose(loaded.predict(texts), classifier.predict(texts), atol=1e-6)
    assert loaded.predict_labels(texts) == classifier.predict_labels(texts)
    relabelled = tl_keras.TextClassifier.from_preset(tmp_path / "saved", labels=["a", "b", "c"])
    assert relabelled.vocabulary.names == ("a", "b", "c")  # A new head on the fine-tuned backbone.
    with pytest.raises(FileExistsError):
        classifier.save_to_preset(tmp_path / "saved")


def test_a_saved_text_classifier_is_a_backbone_for_another_task(tiny_bert_preset, tmp_path):
    texts, labels = separable_sentences(48, seed=4)
    classifier = tl_keras.TextClassifier.from_preset(tiny_bert_preset, labels=["neg", "pos"], strategy="partial:2",
                                                     sequence_length=32, pooling="mean")
    classifier.fit(texts, labels, epochs=2, batch_size=8, verbose=0, backbone_learning_rate=1e-3)
    classifier.save_to_preset(tmp_path / "shop_a")
    regressor = tl_keras.TextClassifier.from_preset(tmp_path / "shop_a", task="regression")
    assert regressor.pooling == "mean"  # Read back from the preset's pooling file.
    tuned = classifier.backbone.get_layer("token_embedding").get_weights()[0]
    np.testing.assert_array_equal(regressor.backbone.get_layer("token_embedding").get_weights()[0], tuned)


def test_keras_own_fit_still_works_on_a_task(tiny_bert_preset):
    import tensorflow as tf

    texts, labels = separable_sentences(16, seed=5)
    classifier = tl_keras.TextClassifier.from_preset(tiny_bert_preset, labels=["neg", "pos"], sequence_length=32)
    tokens = classifier.tokenize(texts)
    dataset = tf.data.Dataset.from_tensor_slices((tokens.arrays, classifier.targets(labels))).batch(8)
    classifier.compile("adam", "sparse_categorical_crossentropy")
    assert len(classifier.fit(dataset, epochs=2, verbose=0).history["loss"]) == 2
    assert classifier.predict(dataset, verbose=0).shape == (16, 2)


def test_image_classifier_fits_image_files_and_round_trips_a_preset(tmp_path):
    from image_data import tiny_efficientnet_preset
    from tl_keras.data.images import read_labelled_images
    from tl_keras.data.sample_images import write_sample_images

    preset = tiny_efficientnet_preset(tmp_path / "preset")
    rows = read_labelled_images(write_sample_images(tmp_path / "photos", per_class=6))
    classifier = tl_keras.ImageClassifier.from_preset(preset, labels=sorted(set(rows.labels)), image_size=32,
                                                      strategy="partial:1", augmentation="flip")
    history = classifier.fit(rows.texts, rows.labels, epochs=2, batch_size=6, verbose=0)
    assert history.history["phase"] == ["partial", "partial"]
    classifier.save_to_preset(tmp_path / "saved")
    loaded = tl_keras.ImageClassifier.from_preset(tmp_path / "saved")
    assert loaded.image_size == (32, 32) and loaded.vocabulary == classifier.vocabulary
    photo_bytes = [open(path, "rb").read() for path in rows.texts]
    np.testing.assert_allclose(loaded.predict(photo_bytes), classifier.predict(rows.texts), atol=1e-6)
    metrics = loaded.evaluate_report(rows.texts, rows.labels, tmp_path / "report", split="train")
    assert metrics["split"] == "train" and (tmp_path / "report" / "confusion_matrix.png").is_file()
    with pytest.raises(ValueError, match="holds a 'ImageClassifier' task, not a 'TextClassifier'"):
        tl_keras.TextClassifier.from_preset(tmp_path / "saved")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"broken.jpg is not a readable JPEG, PNG, BMP or GIF image"):
        loaded.predict([str(tmp_path / "broken.jpg")])
    with pytest.raises(DataError, match=r"image 1 is not a readable JPEG"):
        loaded.predict([photo_bytes[0], b"junk"])


def test_retrieval_fits_interactions_and_round_trips_a_preset(tiny_bert_preset, tmp_path):
    from tl_keras.data.interactions import read_interactions, read_items, read_users

    items, interactions, users = make_synthetic_shop(seed=2, num_users=40, items_per_topic=6).write(tmp_path / "shop")
    catalog = read_items(items)
    interactions, users = read_interactions(interactions, catalog, read_users(users))
    split = time_ordered_split(interactions, 2)
    retrieval = tl_keras.Retrieval.from_preset(tiny_bert_preset, catalog, users, sequence_length=16,
                                               embedding_dim=16)
    history = retrieval.fit(split.train, epochs=2, batch_size=32, verbose=0)
    assert len(history.history["loss"]) == 2
    metrics = retrieval.evaluate_report(split, ks=(5,))
    assert 0 <= metrics["overall"]["recall@5"] <= 1 and metrics["split"] == "test"
    retrieval.save_to_preset(tmp_path / "saved")
    loaded = tl_keras.Retrieval.from_preset(tmp_path / "saved")
    with pytest.raises(ValueError, match=r"saved Retrieval.*cannot apply sequence_length=64, embedding_dim=8"):
        tl_keras.Retrieval.from_preset(tmp_path / "saved", sequence_length=64, embedding_dim=8)
    request = ([users.user_ids[0], "someone-new"], [[catalog.item_ids[0]], [""]])
    ids, scores = retrieval.recommend(*request, k=5)
    loaded_ids, loaded_scores = loaded.recommend(*request, k=5)
    assert loaded_ids.tolist() == ids.tolist()
    np.testing.assert_allclose(loaded_scores, scores, atol=1e-5)
