"""Shared set-up for the benchmarks: the bundled amazon reviews, split the
same way the recipe splits them, and the offline MiniLM backbone."""

import os
import pathlib
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tl_keras  # noqa: E402,F401
from tl_keras.core.quiet import import_tensorflow_quietly  # noqa: E402

import_tensorflow_quietly()  # Before keras: without TensorFlow's C++ start-up lines.

import keras  # noqa: E402
import keras_hub  # noqa: E402

from tl_keras.models.backbones import minilm_l6_offline_path  # noqa: E402
from tl_keras.data.texts import LabelVocabulary, read_labelled_texts, stratified_split  # noqa: E402

REVIEWS = pathlib.Path(__file__).resolve().parent.parent / "data" / "sentiment_labelled_sentences" / "amazon_cells_labelled.txt"


def reviews():
    """Returns (train rows, validation rows, vocabulary, train targets,
    validation targets) for the amazon reviews (640 / 160)."""
    train, validation = stratified_split(read_labelled_texts(REVIEWS), 0.2, seed=1234)
    vocab = LabelVocabulary.from_labels(train.labels)
    return train, validation, vocab, vocab.encode(train.labels), vocab.encode(validation.labels)


def keras_hub_classifier(sequence_length, num_classes=2, with_preprocessor=True):
    """The KerasHub-only way: `BertTextClassifier.from_preset` on MiniLM;
    without its preprocessor it takes token dicts."""
    path = minilm_l6_offline_path()
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor.from_preset(path, sequence_length=sequence_length)
    return keras_hub.models.BertTextClassifier.from_preset(path, num_classes=num_classes, preprocessor=preprocessor if with_preprocessor else None
    )


class EpochTimer(keras.callbacks.Callback):
    """Records each epoch's wall time (the first includes tracing)."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)

    def steady(self):
        """Median epoch time after the first (no tracing)."""
        return sorted(self.seconds[1:])[len(self.seconds[1:]) // 2]


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


def write_rows(folder, name, rows):
    """Writes `rows` as a `text<TAB>label` file in `folder`; returns its path."""
    path = f"{folder}/{name}"
    with open(path, "w", encoding="utf-8") as file:
        file.writelines(f"{t}\t{l}\n" for t, l in zip(rows.texts, rows.labels))
    return path
