"""The token classification SavedModel: raw titles in, a tag a word out.

Signature `serving_default`: `text` (DT_STRING, [-1]) to `words` and `tags`
(DT_STRING, [-1, W], `""` past a title's last word or beyond the sequence
length) and `scores` (float, [-1, W], the tag's probability). Words are the
whitespace-split text, tokenised and aligned by the same `WordPieceAligner`
as in training and `predict`.
"""

import tensorflow as tf

from tl_keras.export.saved_model import ServingModule


def word_outputs(probabilities, first_pieces, tag_names):
    """Per-word `tags` and `scores` from per-position probabilities
    `[B, L, C]` read at each word's first piece (`""` and 0 where a word
    has no position)."""
    per_word = tf.gather(probabilities, first_pieces, batch_dims=1)  # [B, W, C]
    kept = first_pieces > 0
    tag_ids = tf.argmax(per_word, axis=-1)
    return {"tags": tf.where(kept, tf.gather(tag_names, tag_ids), ""),
            "scores": tf.where(kept, tf.reduce_max(per_word, axis=-1), 0.0)}


class TokenServingModule(ServingModule):
    """The serving graph of a `TokenClassifier`: split, align, model, tags.

    Args:
        classifier: the trained `TokenClassifier` (LoRA merged).
    """

    def __init__(self, classifier):
        super().__init__("token_serving")
        self._model = self.track(classifier)
        self.aligner = classifier.aligner
        self.tag_names = tf.constant(list(classifier.vocabulary.names), tf.string)
        self.endpoint("serving_default", self._serve, [tf.TensorSpec([None], tf.string, name="text")])

    def _serve(self, text):
        words = tf.strings.split(text)
        aligned = self.aligner(words)
        first_pieces = aligned.pop("first_pieces")
        inputs = {name: aligned[name] for name in self._model.value.input}
        outputs = word_outputs(self._model.value(inputs, training=False), first_pieces, self.tag_names)
        return {"words": words.to_tensor(default_value=""), **outputs}


def export_token_classifier(classifier, export_dir, model_name, version=None, warmup_texts=(), card=None):
    """Exports a `TokenClassifier` as a TF Serving SavedModel, atomically.

    Example:
    >>> export_token_classifier(tagger, "exports", "title_attributes", warmup_texts=["Acme kettle 1.5L"])
    PosixPath('exports/title_attributes/1')
    """
    module = TokenServingModule(classifier)
    card = {"task": "token_classification", "tags": list(classifier.vocabulary.names),
            "sequence_length": classifier.aligner.sequence_length, **(card or {})}
    return module.write(export_dir, model_name, version, [{"text": [text]} for text in warmup_texts], card)
