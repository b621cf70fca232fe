"""The text SavedModel: raw text in, labels out.

Signatures:
- `serving_default`: `text` (DT_STRING, [-1]; and `text_pair` for a model
  trained on text pairs, packed as one sequence) to `probabilities` [-1, C],
  `label_id` (int64, [-1]) and `label` (DT_STRING, [-1]); for regression
  `prediction` [-1]; for multi-label, `label` joins the names over 0.5
  with commas.
- `serve_tokens`: the backbone's token inputs (int32 [-1, -1] each) to the
  same outputs, for clients that tokenise themselves; ids outside the
  vocabulary (or segments, or a 0/1 mask) and more positions than the
  backbone has fail the request with INVALID_ARGUMENT naming the limit.
"""

import keras_hub
import tensorflow as tf

from tl_keras.data.texts import MULTILABEL_SEPARATOR, MULTILABEL_THRESHOLD
from tl_keras.data.tokens import trim_to_bucket
from tl_keras.export.saved_model import ServingModule


def token_inputs(preprocessed, model):
    """The preprocessor's outputs that `model` takes, as int32 (its
    inputs' dtype), for a serving graph that tokenises raw strings."""
    return {name: tf.cast(preprocessed[name], tf.int32) for name in model.input}


def labelled_outputs(outputs, task, class_names):
    """A classifier's serving outputs: `probabilities`, `label_id` and
    `label` (multi-label: names over the threshold joined by commas;
    regression: `prediction`)."""
    if task == "regression":
        return {"prediction": outputs[:, 0]}
    if task == "multilabel":
        chosen = tf.ragged.boolean_mask(
            tf.broadcast_to(class_names, tf.shape(outputs)), outputs >= MULTILABEL_THRESHOLD
        )
        return {
            "probabilities": outputs,
            "label": tf.strings.reduce_join(chosen, axis=1, separator=MULTILABEL_SEPARATOR),
        }
    label_id = tf.argmax(outputs, axis=1)
    return {"probabilities": outputs, "label_id": label_id, "label": tf.gather(class_names, label_id)}


class TextServingModule(ServingModule):
    """The serving graph: tokeniser, optional trim, model and label lookup.

    Args:
        model: the trained text model (token inputs).
        preprocessor: the backbone's `TextClassifierPreprocessor`.
        vocabulary: the `LabelVocabulary` stored in the graph.
        trim: cut each request's token tensors to its longest real text,
            rounded up to a bucket boundary, before the backbone runs.
        text_pairs: take `text` and `text_pair` (a model trained on pairs).
    """

    def __init__(self, model, preprocessor, vocabulary, trim=True, text_pairs=False):
        super().__init__("text_serving")
        self._model = self.track(model)
        self.preprocessor = preprocessor
        self.task = vocabulary.task
        self.class_names = tf.constant(list(vocabulary.names) or [""], tf.string)
        self.sequence_length = preprocessor.sequence_length
        self.trim = trim
        token_specs = {
            name: tf.TensorSpec([None, None], tf.int32, name=name) for name in model.input
        }
        text = [tf.TensorSpec([None], tf.string, name="text")]
        if text_pairs:
            self.endpoint("serving_default", self._serve_text_pair,
                          [*text, tf.TensorSpec([None], tf.string, name="text_pair")])
        else:
            self.endpoint("serving_default", self._serve_text, text)
        self.endpoint("serve_tokens", self._serve_tokens, [token_specs])
        # `[low, high)` of each token input every backbone of the model (one,
        # or an ensemble's several) can look up.
        backbones = [layer for layer in model._flatten_layers() if isinstance(layer, keras_hub.models.Backbone)]

        def least(name):
            values = [getattr(backbone, name) for backbone in backbones if getattr(backbone, name, None)]
            return min(values) if values else None

        self.token_ranges = {"token_ids": least("vocabulary_size"), "padding_mask": 2, "segment_ids": least("num_segments")}
        self.max_positions = least("max_sequence_length")

    def _outputs(self, inputs):
        if self.trim:
            inputs = trim_to_bucket(inputs, self.sequence_length)
        return labelled_outputs(self._model.value(inputs, training=False), self.task, self.class_names)

    def _serve_text(self, text):
        return self._outputs_of_preprocessed(self.preprocessor(text))

    def _serve_text_pair(self, text, text_pair):
        # A positional tuple would read as (x, y).
        return self._outputs_of_preprocessed(self.preprocessor(x=(text, text_pair)))

    def _outputs_of_preprocessed(self, inputs):
        return self._outputs(token_inputs(inputs, self._model.value))

    def _serve_tokens(self, tokens):
        checks = []
        for name, tensor in tokens.items():
            high = self.token_ranges.get(name)
            if high is not None:
                checks.append(tf.debugging.assert_non_negative(tensor, message=f"{name} must be >= 0"))
                checks.append(tf.debugging.assert_less(tensor, high, message=f"{name} must be < {high}"))
            if self.max_positions is not None:
                checks.append(tf.debugging.assert_less_equal(
                    tf.shape(tensor)[1], self.max_positions,
                    message=f"{name} has more positions than the backbone has ({self.max_positions})"))
        with tf.control_dependencies(checks):
            tokens = {name: tf.identity(tensor) for name, tensor in tokens.items()}
        return self._outputs(tokens)


def export_text_model(
    model,
    preprocessor,
    vocabulary,
    export_dir,
    model_name,
    version=None,
    warmup_texts=(),
    card=None,
    trim=True,
    text_pairs=False,
):
    """Exports a trained text model as a TF Serving SavedModel, atomically.

    Args:
        model: the trained text model (LoRA already merged).
        preprocessor: the backbone's preprocessor; it runs inside the graph.
        vocabulary: the `LabelVocabulary` of the training data.
        export_dir: the base folder TF Serving watches.
        model_name: the model's folder name under `export_dir`.
        version: an integer version; the next free one if `None`.
        warmup_texts: a few real texts (`(text, text_pair)` tuples for a
            pair model) for the warm-up requests.
        card: extra JSON-ready facts for `model_card.json` (backbone,
            strategy, metrics, ...).
        trim: trim padding inside the graph (see `TextServingModule`).
        text_pairs: the model takes text pairs (`text`, `text_pair` inputs).

    Returns:
        The version folder, a `pathlib.Path`.

    Example:
    >>> export_text_model(model, preprocessor, vocabulary, "exports",
    ...                   "reviews", warmup_texts=["great phone"])
    PosixPath('exports/reviews/1')
    """
    module = TextServingModule(model, preprocessor, vocabulary, trim=trim, text_pairs=text_pairs)
    card = {
        "task": vocabulary.task,
        "text_pairs": bool(text_pairs),
        "labels": list(vocabulary.names),
        "parameters": int(model.count_params()),
        **(card or {}),
    }
    return module.write(export_dir, model_name, version,
                        [{"text": [text[0]], "text_pair": [text[1]]} if text_pairs else {"text": [text]}
                         for text in warmup_texts], card, batching=True)
