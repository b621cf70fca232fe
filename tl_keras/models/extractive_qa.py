"""Extractive question answering's loss and span decoding.

A span model gives every position of a window a start and an end logit
(`[W, L, 2]`, from `build_span_head`). It learns with the mean of two softmax
cross-entropies over positions (`SpanLoss`), and answers with the most
probable context span of at most `max_answer_length` tokens over all of a
question's windows (`decode_spans`; start times end probability, each a
softmax over the window's context positions).
"""

import keras
import tensorflow as tf

from tl_keras.data.tokens import trim_to_bucket


@keras.saving.register_keras_serializable(package="tl_keras")
class SpanLoss(keras.losses.Loss):
    """Mean softmax cross-entropy of the start and of the end position.

    `y_true` is int `[B, 2]` (start, end); `y_pred` the logits `[B, L, 2]`.

    Example:
    >>> model.compile(optimizer="adam", loss=SpanLoss())
    """

    def __init__(self, name="span_loss", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, "int32")
        start = keras.losses.sparse_categorical_crossentropy(y_true[:, 0], y_pred[:, :, 0], from_logits=True)
        end = keras.losses.sparse_categorical_crossentropy(y_true[:, 1], y_pred[:, :, 1], from_logits=True)
        return (start + end) / 2


@keras.saving.register_keras_serializable(package="tl_keras")
class SpanAccuracy(keras.metrics.MeanMetricWrapper):
    """The share of windows whose most likely start and end are both right."""

    def __init__(self, name="span_accuracy", **kwargs):
        super().__init__(_span_hits, name=name, **kwargs)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


def _span_hits(y_true, y_pred):
    predicted = keras.ops.cast(keras.ops.argmax(y_pred, axis=1), "int32")
    return keras.ops.cast(keras.ops.all(predicted == keras.ops.cast(y_true, "int32"), axis=1), "float32")


def decode_spans(logits, offsets, example, num_examples, max_answer_length=30, n_best=1):
    """The best spans of each question over all of its windows.

    In each window the start and end logits of the context positions
    (offsets >= 0) go through a softmax; a span's probability is its start's
    times its end's. A span must end at or after its start and hold at most
    `max_answer_length` tokens. A question's spans from all of its windows
    are ranked by probability, the same text span counted once. Its
    no-answer score is its lowest `[CLS]` score (start plus end logit at
    position 0) over its windows, to compare with `logit`.

    Args:
        logits: float `[W, L, 2]` start and end logits.
        offsets: int `[W, L, 2]` byte offsets of each position's token in the
            context, -1 outside it (`SpanTokenizer`).
        example: int `[W]`, the question of each window (ascending).
        num_examples: the number of questions.
        max_answer_length: the longest answer, in tokens.
        n_best: spans kept a question.

    Returns:
        A dict of `[B, n_best]` tensors, best first: `probability` (0 where
        a question has fewer spans), `logit` (start plus end logit; -inf
        there), `start` and `end` (int32 byte offsets of the span in the
        context, end exclusive); and `null_score` (`[B]`).

    Example:
    >>> best = decode_spans(logits, windows.offsets, windows.example, 3)
    """
    logits = tf.cast(logits, tf.float32)
    in_context = offsets[..., 0] >= 0
    masked = tf.where(in_context[..., None], logits, -1e9)
    log_start, log_end = tf.nn.log_softmax(masked[..., 0]), tf.nn.log_softmax(masked[..., 1])
    length = tf.shape(logits)[1]
    positions = tf.range(length)
    gap = positions[None, :] - positions[:, None]  # end - start
    allowed = ((gap >= 0) & (gap < max_answer_length))[None] & in_context[:, :, None] & in_context[:, None, :]
    scores = tf.where(allowed, log_start[:, :, None] + log_end[:, None, :], -float("inf"))
    flat = tf.reshape(scores, [tf.shape(scores)[0], -1])
    keep = tf.minimum(n_best, tf.shape(flat)[1])
    window_scores, flat_index = tf.math.top_k(flat, k=keep)
    start_position, end_position = flat_index // length, flat_index % length
    candidates = {
        "score": window_scores,
        "logit": tf.gather(logits[..., 0], start_position, batch_dims=1)
        + tf.gather(logits[..., 1], end_position, batch_dims=1),
        "start": tf.gather(offsets[..., 0], start_position, batch_dims=1),
        "end": tf.gather(offsets[..., 1], end_position, batch_dims=1),
    }
    # Each question's candidates from all of its windows, as [B, K] (padded with -inf scores).
    per_question = {name: tf.RaggedTensor.from_value_rowids(
        tf.reshape(values, [-1]), tf.repeat(tf.cast(example, tf.int64), keep), nrows=tf.cast(num_examples, tf.int64))
        for name, values in candidates.items()}
    width = tf.maximum(tf.cast(tf.reduce_max(per_question["score"].row_lengths()), tf.int32), n_best)
    shape = tf.cast(tf.stack([num_examples, width]), tf.int64)
    padded = {name: values.to_tensor(-float("inf") if name == "score" else 0, shape=shape)
              for name, values in per_question.items()}
    score, order = tf.math.top_k(padded["score"], k=width)
    ranked = {name: tf.gather(values, order, batch_dims=1) for name, values in padded.items()}
    # Overlapping windows find the same span: keep its first (best) copy only.
    same = (ranked["start"][:, :, None] == ranked["start"][:, None, :]) & (
        ranked["end"][:, :, None] == ranked["end"][:, None, :])
    earlier = tf.linalg.band_part(tf.ones([width, width], tf.bool), -1, 0) & ~tf.eye(width, dtype=tf.bool)
    repeated = tf.reduce_any(same & earlier[None] & tf.math.is_finite(score)[:, None, :], axis=2)
    score, order = tf.math.top_k(tf.where(repeated, -float("inf"), score), k=n_best)
    best = {name: tf.gather(values, order, batch_dims=1) for name, values in ranked.items()}
    found = tf.math.is_finite(score)
    null_score = tf.math.unsorted_segment_min(logits[:, 0, 0] + logits[:, 0, 1], example, num_examples)
    return {"probability": tf.where(found, tf.exp(score), 0.0), "logit": tf.where(found, best["logit"], -float("inf")),
            "start": tf.where(found, best["start"], 0), "end": tf.where(found, best["end"], 0),
            "null_score": null_score}


def answer_questions(model, span_tokenizer, questions, contexts, max_answer_length=30, n_best=1,
                     no_answer_threshold=None):
    """Answers of a span `model` to string tensors `questions` and
    `contexts` (`[B]` each), all in TensorFlow (it runs inside the exported
    SavedModel as in `QuestionAnswerer.predict`).

    Args:
        model: a Keras model from token inputs to span logits `[W, L, 2]`.
        span_tokenizer: the `SpanTokenizer` the model was trained with.
        max_answer_length, n_best: see `decode_spans`.
        no_answer_threshold: `None` always answers (SQuAD v1.1); a number
            answers `""` where the no-answer score beats the best span's by
            more than it (SQuAD v2.0 style).

    Returns:
        A dict of `[B, n_best]` tensors: `answer` (string), `score`
        (probability of the span in its window), `start` and `end` (int32
        character offsets in the context, end exclusive; -1 for no answer).
    """
    windows = span_tokenizer(questions, contexts)
    # Little padding, few shapes: the token inputs and offsets cut to the longest window's bucket.
    trimmed = trim_to_bucket({name: windows[name] for name in (*model.input, "offsets")},
                             span_tokenizer.sequence_length)
    logits = model({name: tf.cast(trimmed[name], tf.int32) for name in model.input}, training=False)
    best = decode_spans(logits, trimmed["offsets"], windows["example"], tf.shape(questions)[0],
                        max_answer_length, n_best)
    found = best["probability"] > 0
    if no_answer_threshold is not None:
        found &= ~(best["null_score"][:, None] - best["logit"][:, :1] > no_answer_threshold)
    texts = tf.broadcast_to(contexts[:, None], tf.shape(best["start"]))
    start, end = tf.where(found, best["start"], 0), tf.where(found, best["end"], 0)
    answer = tf.strings.substr(texts, start, end - start, unit="BYTE")
    start_character = tf.strings.length(tf.strings.substr(texts, tf.zeros_like(start), start, unit="BYTE"), unit="UTF8_CHAR")
    end_character = start_character + tf.strings.length(answer, unit="UTF8_CHAR")
    return {
        "answer": tf.where(found, answer, ""),
        "score": tf.where(found, best["probability"], 0.0),
        "start": tf.where(found, start_character, -1),
        "end": tf.where(found, end_character, -1),
    }
