"""Backbone families load through one API, from preset folders and from the
real offline MiniLM Hugging Face folder."""

import io

import keras_hub
import numpy as np
import pytest
import sentencepiece
import tensorflow as tf

from conftest import POSITIVE, NEGATIVE, FILLER, VOCAB
from tl_keras.models.backbones import (
    default_pooling,
    load_text_backbone,
    minilm_l6_offline_path,
    transformer_blocks,
    unfreeze_top_blocks,
)
from tl_keras.models.heads import build_encoder, build_head, build_text_model

TINY = dict(num_layers=2, num_heads=2, hidden_dim=32, intermediate_dim=64, max_sequence_length=64)
WORDS = POSITIVE + NEGATIVE + FILLER


def _bert():
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=VOCAB)
    return keras_hub.models.BertBackbone(vocabulary_size=len(VOCAB), **TINY), \
        keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=16)


def _distil_bert():
    tokenizer = keras_hub.models.DistilBertTokenizer(vocabulary=VOCAB)
    return keras_hub.models.DistilBertBackbone(vocabulary_size=len(VOCAB), **TINY), \
        keras_hub.models.DistilBertTextClassifierPreprocessor(tokenizer, sequence_length=16)


def _roberta():
    # A byte-pair vocabulary just large enough for "airplane at airport".
    merges = ["Ġ a", "Ġ t", "a i", "p l", "n e", "Ġa t", "p o", "r t",
              "ai r", "pl a", "po rt", "Ġa i", "Ġai r", "pla ne"]
    pieces = [p for merge in merges for p in merge.split()] + [m.replace(" ", "") for m in merges]
    tokens = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] + list(dict.fromkeys(pieces))
    tokenizer = keras_hub.models.RobertaTokenizer(vocabulary={t: i for i, t in enumerate(tokens)}, merges=merges)
    return keras_hub.models.RobertaBackbone(vocabulary_size=len(tokens), **TINY), \
        keras_hub.models.RobertaTextClassifierPreprocessor(tokenizer, sequence_length=16)


def _deberta_v3():
    proto = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter([" ".join(WORDS)] * 4), model_writer=proto, vocab_size=len(WORDS) + 5,
        model_type="WORD", pad_id=0, bos_id=1, eos_id=2, unk_id=3, pad_piece="[PAD]",
        bos_piece="[CLS]", eos_piece="[SEP]", unk_piece="[UNK]", user_defined_symbols="[MASK]",
    )
    tokenizer = keras_hub.models.DebertaV3Tokenizer(proto=proto.getvalue())
    backbone = keras_hub.models.DebertaV3Backbone(vocabulary_size=tokenizer.vocabulary_size(), bucket_size=8, **TINY)
    return backbone, keras_hub.models.DebertaV3TextClassifierPreprocessor(tokenizer, sequence_length=16)


@pytest.mark.parametrize("family, build, pooling", [
    ("bert", _bert, "pooled"),
    ("distil_bert", _distil_bert, "cls"),
    ("roberta", _roberta, "cls"),
    ("deberta_v3", _deberta_v3, "cls"),
])
def test_family_round_trips_through_a_preset_folder(tmp_path, family, build, pooling):
    backbone, preprocessor = build()
    backbone.save_to_preset(str(tmp_path / family))
    preprocessor.save_to_preset(str(tmp_path / family))
    loaded, loaded_preprocessor = load_text_backbone(str(tmp_path / family), sequence_length=16)
    assert type(loaded) is type(backbone)
    assert default_pooling(str(tmp_path / family), loaded) == pooling
    assert len(transformer_blocks(loaded)) == 2
    model = build_text_model(build_encoder(loaded, pooling), build_head(32, 3, "classification"))
    inputs = loaded_preprocessor(tf.constant(["good phone", "airplane at airport"]))
    assert set(inputs) == set(model.input)
    probabilities = model.predict(dict(inputs), verbose=0)
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    unfreeze_top_blocks(loaded, 1)
    assert [b.trainable for b in transformer_blocks(loaded)] == [False, True]


def test_bad_preset_and_sequence_length_are_named(tmp_path):
    with pytest.raises(ValueError, match="no_such_folder"):
        load_text_backbone(str(tmp_path / "no_such_folder"))
    with pytest.raises(ValueError, match="received 1"):
        load_text_backbone("bert_tiny_en_uncased", sequence_length=1)


def test_real_minilm_loads_offline_from_its_hugging_face_folder():
    path = minilm_l6_offline_path()
    backbone, preprocessor = load_text_backbone(path, sequence_length=32)
    assert backbone.count_params() == 22_713_216
    assert len(transformer_blocks(backbone)) == 6
    assert default_pooling(path, backbone) == "mean"
    encoder = build_encoder(backbone, "mean")
    texts = ["The battery dies after an hour.", "Battery life is very short.", "I love the bright screen colours."]
    vectors = encoder.predict(dict(preprocessor(tf.constant(texts))), verbose=0)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # Real sentence-embedding weights: the paraphrase is closer than the unrelated text.
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2
