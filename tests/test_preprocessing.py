"""Tokenise once, bucketed batches, and the frozen-feature cache."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import SEQUENCE_LENGTH, separable_sentences, tiny_bert
from tl_keras.transfer.feature_cache import FeatureCache
from tl_keras.models.heads import build_encoder, build_head, build_text_model
from tl_keras.data.tokens import BUCKET_STEP, make_dataset, predict_in_length_order, tokenize


@pytest.fixture(scope="module")
def tokens_and_model():
    backbone, preprocessor = tiny_bert(seed=5)
    texts, _ = separable_sentences(80, seed=3)
    tokens = tokenize(texts, preprocessor, verbose=0)
    model = build_text_model(build_encoder(backbone, "mean"), build_head(32, 2, "classification"))
    return texts, tokens, preprocessor, model


def test_tokenize_matches_preprocessor(tokens_and_model):
    texts, tokens, preprocessor, _ = tokens_and_model
    direct = preprocessor(tf.constant(texts[:3]))
    for name in direct:
        np.testing.assert_array_equal(tokens.arrays[name][:3], direct[name].numpy().astype("int32"))
    assert tokens.sequence_length == SEQUENCE_LENGTH
    np.testing.assert_array_equal(tokens.lengths, tokens.arrays["padding_mask"].sum(axis=1))


def test_batches_are_trimmed_to_bucket_widths_without_losing_tokens(tokens_and_model):
    _, tokens, _, _ = tokens_and_model
    targets = np.arange(len(tokens))
    dataset = make_dataset(tokens, targets, batch_size=8, shuffle=True, seed=0)
    assert dataset.cardinality().numpy() == 10
    seen = []
    for inputs, batch_targets in dataset:
        width = inputs["token_ids"].shape[1]
        longest = int(tf.reduce_max(tf.reduce_sum(inputs["padding_mask"], axis=1)))
        assert width % BUCKET_STEP == 0 or width == SEQUENCE_LENGTH
        assert longest <= width < longest + BUCKET_STEP
        for row, target in zip(inputs["token_ids"].numpy(), batch_targets.numpy()):
            full = tokens.arrays["token_ids"][target]
            np.testing.assert_array_equal(row, full[:width])
            assert not full[width:].any()
        seen.extend(batch_targets.numpy().tolist())
    assert sorted(seen) == list(range(len(tokens)))


def test_shuffling_mixes_examples_across_buckets_between_epochs(tokens_and_model):
    _, tokens, _, _ = tokens_and_model
    dataset = make_dataset(tokens, np.arange(len(tokens)), batch_size=8, shuffle=True, seed=0)
    epochs = [[tuple(sorted(y.numpy())) for _, y in dataset] for _ in range(2)]
    assert set(epochs[0]) != set(epochs[1])
    first_batches = [sorted(y.numpy()) for _, y in dataset.take(1)]
    assert first_batches[0] != list(range(8))


def test_training_function_traces_at_most_once_per_bucket(tokens_and_model):
    _, tokens, _, model = tokens_and_model
    widths = []

    class RecordWidth(keras.layers.Layer):
        def call(self, x):
            widths.append(x.shape[1])  # Python runs only while tracing.
            return x

    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in model.input}
    probe = keras.Model(inputs, model({**inputs, "token_ids": RecordWidth()(inputs["token_ids"])}))
    probe.compile("adam", "sparse_categorical_crossentropy")
    dataset = make_dataset(tokens, np.zeros(len(tokens), "int32"), batch_size=4, shuffle=True, seed=1)
    shapes = {x["token_ids"].shape[1] for x, _ in dataset}
    assert len(shapes) >= 2  # The data really has several buckets.
    probe.fit(dataset, epochs=2, verbose=0)
    traces = len(widths) - 1  # One symbolic call at model construction.
    assert 1 <= traces <= SEQUENCE_LENGTH // BUCKET_STEP


def test_predict_in_length_order_keeps_row_order(tokens_and_model):
    _, tokens, _, model = tokens_and_model
    ordered = predict_in_length_order(model, tokens, batch_size=16)
    direct = model.predict(tokens.arrays, verbose=0)
    np.testing.assert_allclose(ordered, direct, atol=1e-5)


def test_feature_cache_hits_and_invalidates(tokens_and_model, tmp_path):
    texts, tokens, preprocessor, model = tokens_and_model
    encoder = model.encoder
    cache = FeatureCache(tmp_path)
    first = cache.features(encoder, tokens, verbose=0)
    assert (cache.hits, cache.misses) == (0, 1)
    np.testing.assert_allclose(first, encoder.predict(tokens.arrays, verbose=0), atol=1e-5)
    np.testing.assert_array_equal(cache.features(encoder, tokens, verbose=0), first)
    assert (cache.hits, cache.misses) == (1, 1)
    # A fresh cache object finds the entry on disk.
    fresh = FeatureCache(tmp_path)
    np.testing.assert_array_equal(fresh.features(encoder, tokens, verbose=0), first)
    assert fresh.hits == 1 and len(list(tmp_path.glob("*.npz"))) == 1
    # Other data, another sequence length, or changed weights: a miss.
    cache.features(encoder, tokens.take(np.arange(10)), verbose=0)
    shorter = tokenize(texts, type(preprocessor)(preprocessor.tokenizer, sequence_length=16), verbose=0)
    cache.features(encoder, shorter, verbose=0)
    weight = encoder.weights[0]
    weight.assign(weight.numpy() + np.random.default_rng(0).normal(size=weight.shape))
    changed = cache.features(encoder, tokens, verbose=0)
    assert cache.misses == 4
    assert not np.allclose(changed, first)


def test_token_ids_are_cached_on_disk_and_keyed_by_texts_and_preprocessor(tokens_and_model, tmp_path):
    texts, tokens, preprocessor, _ = tokens_and_model
    first = tokenize(texts, preprocessor, verbose=0, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    again = tokenize(texts, preprocessor, verbose=0, cache_dir=tmp_path)
    for name in tokens.arrays:
        np.testing.assert_array_equal(again.arrays[name], tokens.arrays[name])
        np.testing.assert_array_equal(first.arrays[name], tokens.arrays[name])
    np.testing.assert_array_equal(again.lengths, tokens.lengths)
    # Other texts or another sequence length make new entries.
    tokenize(texts[:5], preprocessor, verbose=0, cache_dir=tmp_path)
    tokenize(texts, type(preprocessor)(preprocessor.tokenizer, sequence_length=16), verbose=0, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_head_and_tail_keeps_first_and_last_tokens_of_long_rows_only(tokens_and_model):
    texts, _, preprocessor, _ = tokens_and_model
    long_text = " ".join(texts[:6])
    tokens = tokenize([long_text, " ".join(texts[0].split()[:3])], preprocessor, verbose=0)
    full = tokens.lengths[0]
    assert full == SEQUENCE_LENGTH  # The long text fills the packer's length; the short one does not.
    short = tokens.lengths[1]
    assert short < 12
    cut = tokens.head_and_tail(12, head=4)
    ids = tokens.arrays["token_ids"]
    np.testing.assert_array_equal(cut.arrays["token_ids"][0], np.concatenate([ids[0, :4], ids[0, full - 8:full]]))
    assert cut.arrays["token_ids"][0, -1] == ids[0, full - 1]  # The closing [SEP] stays.
    assert cut.lengths.tolist() == [12, short]
    np.testing.assert_array_equal(cut.arrays["token_ids"][1], ids[1, :12])
    # head = length - 1 cuts as the preprocessor itself does: the first tokens, then [SEP].
    packed = preprocessor.tokenizer.token_to_id("[SEP]")
    assert tokens.head_and_tail(12, head=11).arrays["token_ids"][0, -1] == packed
    with pytest.raises(ValueError, match="head=12"):
        tokens.head_and_tail(12, head=12)
