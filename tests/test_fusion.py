import numpy as np
import pytest
import tensorflow as tf

from conftest import separable_sentences, tiny_bert
from tl_keras.data.texts import LabelVocabulary
from tl_keras.export.text import export_text_model
from tl_keras.transfer.fusion import FusionError, ensemble, greedy_soup, uniform_soup
from tl_keras.models.heads import build_encoder, build_head, build_text_model
from tl_keras.data.tokens import predict_in_length_order, tokenize
from tl_keras.transfer.strategies import parse_strategy
from tl_keras.training.trainer import TrainingConfig, TrainingData, train

VOCAB = LabelVocabulary.from_labels(["neg", "pos"])


@pytest.fixture(scope="module")
def ingredients():
    """Three models fine-tuned from one tiny backbone with different seeds."""
    texts, labels = separable_sentences(64, seed=1)
    models = []
    for seed in (1, 2, 3):
        backbone, preprocessor = tiny_bert(seed=3)  # The same pretrained start.
        tokens = tokenize(texts, preprocessor, verbose=0)
        data = TrainingData(tokens, VOCAB.encode(labels), tokens, VOCAB.encode(labels))
        model = build_text_model(build_encoder(backbone, "mean"), build_head(32, 2, "classification"))
        model, _ = train(model, parse_strategy("full"), data,
                         TrainingConfig(epochs=2, warmup_epochs=0, batch_size=16, seed=seed,
                                        backbone_learning_rate=1e-3, verbose=0))
        models.append(model)
    return models, tokens, preprocessor


def test_uniform_soup_is_the_mean_of_the_weights(ingredients):
    models, tokens, _ = ingredients
    soup = uniform_soup(models, [VOCAB] * 3)
    for i, weight in enumerate(soup.get_weights()):
        np.testing.assert_allclose(weight, np.mean([m.get_weights()[i] for m in models], axis=0), atol=1e-7)
    assert soup.count_params() == models[0].count_params()  # One model's inference.
    assert not np.allclose(soup.get_weights()[0], models[0].get_weights()[0])


def test_greedy_soup_keeps_only_what_helps(ingredients):
    models, _, _ = ingredients

    def closeness_to(target):
        return lambda model: -sum(np.abs(w - t).sum() for w, t in zip(model.get_weights(), target))

    # Scored by closeness to model 2: it ranks first, and every soup with
    # another model scores worse, so nothing joins it.
    soup, kept = greedy_soup(models, closeness_to(models[2].get_weights()))
    assert kept == [2]
    np.testing.assert_array_equal(soup.get_weights()[0], models[2].get_weights()[0])
    # Scored by closeness to the mean of all three: each addition helps.
    mean = uniform_soup(models).get_weights()
    soup, kept = greedy_soup(models, closeness_to(mean))
    assert sorted(kept) == [0, 1, 2]
    np.testing.assert_allclose(soup.get_weights()[0], mean[0], atol=1e-7)


def test_ensemble_averages_probabilities_and_exports(ingredients, tmp_path):
    models, tokens, preprocessor = ingredients
    averaged = ensemble(models, [VOCAB] * 3)
    expected = np.mean([predict_in_length_order(m, tokens) for m in models], axis=0)
    np.testing.assert_allclose(predict_in_length_order(averaged, tokens), expected, atol=1e-6)
    path = export_text_model(averaged, preprocessor, VOCAB, tmp_path, "ensemble")
    served = tf.saved_model.load(str(path)).signatures["serving_default"](text=tf.constant(["good phone"]))
    np.testing.assert_allclose(served["probabilities"].numpy(),
                               averaged.predict(dict(preprocessor(tf.constant(["good phone"]))), verbose=0), atol=1e-5)


def test_fusion_refuses_other_architectures_and_labels(ingredients):
    models, _, _ = ingredients
    backbone, _ = tiny_bert(seed=3)
    wider = build_text_model(build_encoder(backbone, "mean"), build_head(32, 2, "classification", hidden_dim=8))
    with pytest.raises(FusionError, match="Model 1 has another architecture than model 0"):
        uniform_soup([models[0], wider])
    three = build_text_model(build_encoder(tiny_bert(seed=3)[0], "mean"), build_head(32, 3, "classification"))
    with pytest.raises(FusionError, match="Model 1 has 3 outputs, model 0 has 2"):
        ensemble([models[0], three])
    other = LabelVocabulary.from_labels(["bad", "good"])
    with pytest.raises(FusionError, match=r"other labels than model 0: \['bad', 'good'\]"):
        uniform_soup(models[:2], [VOCAB, other])
    with pytest.raises(FusionError, match="at least two models, received 1"):
        uniform_soup(models[:1])


def test_image_ensemble_resizes_for_each_member_and_serves_bytes(tmp_path):
    from image_data import tiny_efficientnet
    from tl_keras.data.images import decode_and_resize
    from tl_keras.export.image import export_image_model
    from tl_keras.tasks.image_classifier import ImageClassifier

    vocabulary = LabelVocabulary.from_labels(["bag", "box", "can"])
    small, large = (ImageClassifier(tiny_efficientnet(seed=seed), vocabulary, size, strategy="frozen",
                                    test_time_augmentation=flip)
                    for seed, size, flip in ((1, (32, 32), "none"), (2, (40, 40), "flip")))
    photos = ensemble([small, large], [vocabulary] * 2)
    assert tuple(photos.input.shape[1:]) == (40, 40, 3)  # The larger member's size.
    pixels = np.random.default_rng(0).integers(0, 256, (4, 40, 40, 3)).astype("float32")
    expected = (small.predict(tf.image.resize(pixels, (32, 32), method="bilinear").numpy(), verbose=0)
                + large.predict(pixels, verbose=0)) / 2
    np.testing.assert_allclose(photos.predict(pixels, verbose=0), expected, atol=1e-5)
    assert not np.allclose(expected, large.predict(pixels, verbose=0), atol=1e-3)  # Both members count.

    encoded = [tf.io.encode_png(tf.constant(image.astype("uint8"))).numpy() for image in pixels]
    path = export_image_model(photos, vocabulary, (40, 40), tmp_path, "photos")
    served = tf.saved_model.load(str(path)).signatures["serving_default"](image_bytes=tf.constant(encoded))
    decoded = np.stack([decode_and_resize(image, (40, 40)).numpy() for image in encoded]).astype("float32")
    np.testing.assert_allclose(served["probabilities"].numpy(), photos.predict(decoded, verbose=0), atol=1e-5)
    with pytest.raises(FusionError, match="Model 1 has 2 outputs, model 0 has 3"):
        ensemble([small, ImageClassifier(tiny_efficientnet(seed=3), LabelVocabulary.from_labels(["a", "b"]),
                                         (32, 32), strategy="frozen")])
