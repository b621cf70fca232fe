"""Shared fixtures: tiny KerasHub backbones built from config, a small
vocabulary written here, and a separable sentiment set. Nothing touches the
network."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tl_keras  # noqa: E402,F401  (selects the TensorFlow backend first)

import keras  # noqa: E402
import keras_hub  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

POSITIVE = ["good", "great", "excellent", "love", "perfect", "happy"]
NEGATIVE = ["bad", "awful", "terrible", "hate", "broken", "sad"]
FILLER = ["the", "phone", "is", "it", "was", "very", "this", "case", "and", "battery"]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + POSITIVE + NEGATIVE + FILLER
SEQUENCE_LENGTH = 32
# TensorFlow's own `saved_model_cli`, with the TF Text ops registered first, as
# TF Serving has them linked in (the plain entry point lacks them). It loads a
# SavedModel into a TF1 session, as TF Serving does.
SAVED_MODEL_CLI = [sys.executable, "-c", "import sys, tensorflow_text; "
                   "from tensorflow.python.tools.saved_model_cli import main; "
                   "sys.argv[0] = 'saved_model_cli'; sys.exit(main())"]


def separable_sentences(count, seed=0):
    """Returns (texts, labels): positive words → "pos", negative → "neg"."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(count):
        label = "pos" if i % 2 == 0 else "neg"
        words = list(rng.choice(FILLER, size=rng.integers(2, 20)))
        sentiment = POSITIVE if label == "pos" else NEGATIVE
        for _ in range(2):
            words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(sentiment)))
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def write_tsv(path, texts, labels):
    path.write_text("".join(f"{t}\t{l}\n" for t, l in zip(texts, labels)), encoding="utf-8")
    return path


def tiny_bert(seed=0, dropout=0.1):
    keras.utils.set_random_seed(seed)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(VOCAB), num_layers=2, num_heads=2, hidden_dim=32,
        intermediate_dim=64, max_sequence_length=64, dropout=dropout,
    )
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=VOCAB, lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=SEQUENCE_LENGTH)
    return backbone, preprocessor


@pytest.fixture(scope="session")
def tiny_bert_preset(tmp_path_factory):
    """A local KerasHub preset folder holding a 2-layer, 32-wide BERT."""
    path = tmp_path_factory.mktemp("presets") / "tiny_bert"
    backbone, preprocessor = tiny_bert()
    backbone.save_to_preset(str(path))
    preprocessor.save_to_preset(str(path))
    return str(path)


@pytest.fixture(scope="session")
def sentiment_files(tmp_path_factory):
    """(train.tsv, validation.tsv) of separable synthetic sentences."""
    folder = tmp_path_factory.mktemp("sentiment")
    train = write_tsv(folder / "train.tsv", *separable_sentences(96, seed=1))
    validation = write_tsv(folder / "validation.tsv", *separable_sentences(32, seed=2))
    return str(train), str(validation)
