"""`TokenClassifier`: a tag for each word of a text, such as product
attributes in titles (`Acme/B-brand steel/B-material kettle/O 1.5L/B-size`),
on a BERT-family backbone, through the tasks' one contract: `from_preset`,
`fit` on raw titles and tags, `predict`, `predict_labels`,
`evaluate_report`, `save_to_preset`, `export`.
"""

import pathlib

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tl_keras.core.choices import TAGGING_STRATEGY
from tl_keras.core.files import write_json
from tl_keras.data.texts import LabelVocabulary
from tl_keras.data.token_tags import IGNORED, WordPieceAligner, tag_targets
from tl_keras.export.token_classification import export_token_classifier, word_outputs
from tl_keras.models.backbones import load_text_backbone
from tl_keras.models.heads import EncoderHeadModel, build_sequence_encoder
from tl_keras.tasks.base import TransferTask, deserialized, head_changes, history_of, read_task_config, training_config
from tl_keras.training.trainer import TrainingData, train
from tl_keras.transfer.feature_cache import FeatureCache
from tl_keras.transfer.strategies import parse_strategy


@keras.saving.register_keras_serializable(package="tl_keras")
class TagLoss(keras.losses.Loss):
    """Cross-entropy of the tag probabilities at the positions whose target
    is not `IGNORED`, averaged over those positions. Targets may be wider
    than a batch trimmed to its longest title (the cut columns are padding)."""

    def __init__(self, name="tag_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true[:, :ops.shape(y_pred)[1]], "int32")
        present = ops.cast(ops.not_equal(y_true, IGNORED), y_pred.dtype)
        picked = ops.take_along_axis(y_pred, ops.expand_dims(ops.maximum(y_true, 0), -1), axis=-1)[..., 0]
        losses = -ops.log(ops.clip(picked, 1e-7, 1.0)) * present
        return ops.sum(losses, axis=1) / ops.maximum(ops.sum(present, axis=1), 1.0)


@keras.saving.register_keras_serializable(package="tl_keras")
class TagAccuracy(keras.metrics.Metric):
    """The share of tagged positions whose most probable tag is the target."""

    def __init__(self, name="accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.right = self.add_variable(shape=(), initializer="zeros", name="right")
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(y_true[:, :ops.shape(y_pred)[1]], "int32")
        present = ops.cast(ops.not_equal(y_true, IGNORED), "float32")
        right = ops.cast(ops.equal(ops.cast(ops.argmax(y_pred, axis=-1), "int32"), y_true), "float32") * present
        self.right.assign_add(ops.sum(right))
        self.total.assign_add(ops.sum(present))

    def result(self):
        return self.right / ops.maximum(self.total, 1.0)


def build_tag_head(feature_dim, num_tags, dropout=0.1):
    """A vector a token in, tag probabilities a token out (`[B, L, T]`,
    float32), named `"head"`."""
    features = keras.Input(shape=(None, feature_dim), name="features")
    x = keras.layers.Dropout(dropout, name="head_dropout")(features)
    outputs = keras.layers.Dense(num_tags, activation="softmax", dtype="float32", name="tag_probabilities")(x)
    return keras.Model(features, outputs, name="head")


def entity_spans(tags):
    """`(type, first word, last word)` of each entity in a BIO tag list; an
    `I-x` without a `B-x` before it starts an entity (as CoNLL scoring does)."""
    spans, current = [], None
    for position, tag in enumerate([*tags, "O"]):
        kind = tag[2:] if tag[:2] in ("B-", "I-") else None
        if current and (kind != current[0] or tag.startswith("B-")):
            spans.append((current[0], current[1], position - 1))
            current = None
        if kind and current is None:
            current = (kind, position)
    return spans


def _words(x):
    """Titles as lists of words: strings are split as the SavedModel splits
    them (`tf.strings.split`), lists of words are kept."""
    if isinstance(x, str) or not isinstance(x, (list, tuple)):
        raise ValueError(f"`x` must be a list of texts or of word lists, received {type(x).__name__} {str(x)[:60]!r}.")
    if all(isinstance(title, str) for title in x):
        return [[word.decode() for word in title] for title in tf.strings.split(tf.constant(list(x))).to_list()]
    return [list(title) for title in x]


@keras.saving.register_keras_serializable(package="tl_keras")
class TokenClassifier(TransferTask, EncoderHeadModel):
    """A text backbone's per-token outputs and a tag head, as one Keras model
    on the backbone's token inputs, with its word-piece aligner and tags.

    Args:
        backbone: a KerasHub BERT-family `Backbone`.
        preprocessor: its `TextClassifierPreprocessor` (for the tokenizer).
        vocabulary: the tags, a `LabelVocabulary`.
        strategy: `"frozen"`, `"partial:N"`, `"full"` or `"lora:R"`.
        sequence_length: token positions a title.
        dropout: the head's dropout rate.

    Example:
    >>> tagger = TokenClassifier.from_preset(minilm_l6_offline_path(), tags=["B-brand", "I-brand", "O"])
    >>> tagger.fit(["Acme steel kettle"], [["B-brand", "O", "O"]], epochs=3)
    >>> tagger.predict_labels(["Acme cup"])
    [['B-brand', 'O']]
    """

    def __init__(self, backbone, preprocessor, vocabulary, strategy=TAGGING_STRATEGY, sequence_length=64, dropout=0.1,
                 **kwargs):
        encoder = build_sequence_encoder(backbone)
        head = build_tag_head(encoder.output.shape[-1], len(vocabulary.names), dropout)
        super().__init__(encoder, head, name=kwargs.pop("name", "token_classifier"), **kwargs)
        self.backbone, self.preprocessor, self.vocabulary = backbone, preprocessor, vocabulary
        self.strategy, self.dropout = parse_strategy(strategy), dropout
        WordPieceAligner.check_tokenizer(preprocessor.tokenizer)
        self.sequence_length, self._aligner = sequence_length, None

    @property
    def aligner(self):
        """The `WordPieceAligner`, made on first use: it reads the
        vocabulary, which a `.keras` file restores only after the task is
        built."""
        if self._aligner is None:
            self._aligner = WordPieceAligner(self.preprocessor.tokenizer, self.sequence_length)
        return self._aligner

    def loss_and_metrics(self):
        """The tag loss and tag accuracy over the words' first pieces."""
        return TagLoss(), [TagAccuracy()]

    @classmethod
    def from_preset(cls, preset, tags=None, strategy=TAGGING_STRATEGY, sequence_length=None, dropout=None):
        """A tagger on a KerasHub BERT-family preset, or one saved by
        `save_to_preset` (whole; other `tags` give its fine-tuned backbone
        a new head; `strategy`, `sequence_length` and `dropout` apply).

        Example:
        >>> TokenClassifier.from_preset("presets/title_tagger").predict_labels(["Acme kettle"])
        """
        stored = read_task_config(preset, cls)
        names = tuple(sorted(tags)) if tags is not None else None
        changes = head_changes(stored, tags=names) if stored else {}
        if stored is None and not names:
            raise ValueError(f"`tags` must name the tags of a new tagger, received {tags!r}.")
        names = names or tuple(stored["tags"])
        length = sequence_length or (stored or {}).get("sequence_length", 64)
        backbone, preprocessor = load_text_backbone(preset, length)
        tagger = cls(backbone, preprocessor, LabelVocabulary.from_labels(list(names)), strategy, length,
                     (stored or {}).get("dropout", 0.1) if dropout is None else dropout)
        if stored and not changes:
            tagger.head.load_weights(str(pathlib.Path(str(preset)) / "head.weights.h5"))
        return tagger

    def fit(self, x=None, y=None, batch_size=16, epochs=3, verbose=1, callbacks=None, validation_data=None,
            distribution=None, **settings):
        """Trains on titles (texts, or lists of words) and a tag list a title
        (one tag a word), with the transfer strategy, in Keras' argument
        order; what Keras' own `fit` takes goes to it unchanged.

        Returns:
            A `keras.callbacks.History`.
        """
        if not isinstance(x, (list, tuple)):
            return super().fit(x, y, batch_size=None if isinstance(x, tf.data.Dataset) else batch_size,
                               epochs=epochs, verbose=verbose, callbacks=list(callbacks or ()),
                               validation_data=validation_data, **settings)
        tokens, targets = self._aligned(x, y)
        validation = (None, None) if validation_data is None else self._aligned(*validation_data)
        config = training_config(epochs, batch_size, {"verbose": verbose, "warmup_epochs": 0, **settings})
        _, history = train(self, self.strategy, TrainingData(tokens, targets, *validation), config, FeatureCache(),
                           distribution, list(callbacks or ()))
        return history_of(history)

    def _aligned(self, x, y):
        words = _words(x)
        if len(words) != len(y):
            raise ValueError(f"{len(words)} titles but {len(y)} tag lists.")
        for row, (title, tags) in enumerate(zip(words, y)):
            if len(title) != len(tags):
                raise ValueError(f"title {row + 1} has {len(title)} words but {len(tags)} tags: {title!r:.80}")
        tokens = self.aligner.tokenize(words)
        return tokens, tag_targets(tokens, y, self.vocabulary)

    def _positions(self, x, batch_size, verbose=0):
        """`(words, tokens, per-position probabilities)` of raw titles: the
        one tokenise-and-run that `predict` and `predict_labels` share."""
        words = _words(x)
        tokens = self.aligner.tokenize(words)
        return words, tokens, keras.Model.predict(self, tokens.arrays, batch_size=batch_size, verbose=verbose)

    def predict(self, x, batch_size=64, verbose=0, **kwargs):
        """Tag probabilities a word (`[words, tags]` arrays, one a title; a
        word beyond the sequence length gets zeros) for raw titles; other
        inputs go to Keras' own `predict`."""
        if not isinstance(x, (list, tuple)):
            return super().predict(x, batch_size=batch_size, verbose=verbose, **kwargs)
        words, tokens, outputs = self._positions(x, batch_size, verbose)
        per_word = np.take_along_axis(outputs, tokens.first_pieces[..., None], axis=1)
        per_word = per_word * (tokens.first_pieces > 0)[..., None]
        return [per_word[row, :len(title)] for row, title in enumerate(words)]

    def predict_labels(self, x, batch_size=64):
        """A tag a word for each title (`""` for a word beyond the sequence
        length), as the SavedModel's `tags`."""
        words, tokens, probabilities = self._positions(x, batch_size)
        tags = word_outputs(tf.constant(probabilities), tf.constant(tokens.first_pieces),
                            tf.constant(list(self.vocabulary.names)))["tags"].numpy()
        return [[tag.decode() for tag in tags[row, :len(title)]] for row, title in enumerate(words)]

    def evaluate_report(self, x, y, output_dir=None, split="test"):
        """Word tag accuracy and entity precision, recall and F1 (exact BIO
        spans, as CoNLL scoring counts them) on titles `x` with tags `y`;
        with `output_dir`, writes `metrics.json` there.

        Returns:
            The metrics dict (with `"split"`).
        """
        predicted = self.predict_labels(x)
        words = sum(len(tags) for tags in y)
        right = sum(p == t for tags, guess in zip(y, predicted) for p, t in zip(guess, tags))
        found = {(row, *span) for row, tags in enumerate(predicted) for span in entity_spans(tags)}
        truth = {(row, *span) for row, tags in enumerate(y) for span in entity_spans(tags)}
        precision = len(found & truth) / max(len(found), 1)
        recall = len(found & truth) / max(len(truth), 1)
        metrics = {"split": split, "word_accuracy": right / max(words, 1), "entity_precision": precision,
                   "entity_recall": recall, "entity_f1": 2 * precision * recall / max(precision + recall, 1e-12),
                   "titles": len(y), "words": words, "entities": len(truth)}
        if output_dir is not None:
            write_json(pathlib.Path(output_dir) / "metrics.json", metrics)
        return metrics

    def task_config(self):
        return {"tags": list(self.vocabulary.names), "strategy": str(self.strategy), "dropout": self.dropout,
                "sequence_length": self.sequence_length}

    @classmethod
    def from_config(cls, config):
        parts, settings = deserialized(config, "backbone", "preprocessor")
        vocabulary = LabelVocabulary("classification", tuple(settings.pop("tags")))
        return cls(parts["backbone"], parts["preprocessor"], vocabulary, **settings)

    def write_preset_parts(self, folder):
        self.backbone.save_to_preset(str(folder))  # LoRA factors are saved merged into the kernels.
        self.preprocessor.save_to_preset(str(folder))
        self.head.save_weights(str(folder / "head.weights.h5"))

    def export(self, export_dir, model_name, version=None, warmup=(), card=None):
        """Writes the TF Serving SavedModel (titles in, a tag a word out) as
        `export_dir/model_name/<version>/`; see
        `tl_keras.export.token_classification`."""
        card = {"strategy": str(self.strategy), **(card or {})}
        return export_token_classifier(self.merged(), export_dir, model_name, version, warmup, card)
