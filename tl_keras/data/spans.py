"""Question + context pairs as token windows that remember where each token
came from, for extractive question answering.

A context longer than the sequence leaves room for is cut into windows that
overlap: each window starts `doc_stride` tokens after the one before. Every
window is packed as `[CLS] question [SEP] context window [SEP]` with segment
ids (0 for the question, 1 for the context), and every position keeps the
byte offsets of its token in the context (-1 for the question, special tokens
and padding), so a predicted span of tokens maps back to a span of the
context's text. The same TensorFlow function runs in training, evaluation
and inside the exported SavedModel.

KerasHub's WordPiece tokenizer returns no offsets, so the words are split
again here with TF Text's `FastBertTokenizer`, built from the same
vocabulary (`lower_case_nfd_strip_accents` as uncased BERT was trained).
"""

import dataclasses

import keras_hub
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from tl_keras.core.progress import progress_bar
from tl_keras.data.tokens import TokenizedTexts


@dataclasses.dataclass
class SpanWindows(TokenizedTexts):
    """`TokenizedTexts` of question/context windows with, for each window,
    the question it belongs to (`example`) and each position's byte offsets
    in that question's context (`offsets`, int32 `[N, sequence_length, 2]`,
    -1 outside the context)."""

    example: np.ndarray = None
    offsets: np.ndarray = None
    cacheable = False  # Sequence outputs are too large to cache usefully.

    def take(self, indices):
        rows = super().take(indices)
        return SpanWindows(rows.arrays, rows.lengths, self.example[indices], self.offsets[indices])


class SpanTokenizer(tf.Module):
    """Cuts questions and contexts into packed, overlapping token windows.

    Args:
        tokenizer: the backbone's KerasHub `WordPieceTokenizer` (BERT
            family); its vocabulary and special tokens are used.
        sequence_length: token positions a window.
        doc_stride: tokens from one window's start to the next's.
        max_question_length: question tokens kept (the rest are cut).

    Example:
    >>> spans = SpanTokenizer(preprocessor.tokenizer, sequence_length=256)
    >>> windows = spans(["Who won?"], ["The Broncos won the game."])
    >>> windows["token_ids"].shape
    TensorShape([1, 256])
    """

    def __init__(self, tokenizer, sequence_length=256, doc_stride=128, max_question_length=64):
        super().__init__(name="span_tokenizer")
        self.check_settings(tokenizer, sequence_length, doc_stride, max_question_length)
        self.sequence_length, self.doc_stride = sequence_length, doc_stride
        self.max_question_length = max_question_length
        self.fast_tokenizer = tf_text.FastBertTokenizer(
            vocab=tokenizer.get_vocabulary(), token_out_type=tf.int32, unknown_token=tokenizer.oov_token,
            lower_case_nfd_strip_accents=bool(tokenizer.lowercase))
        self.cls_id = tokenizer.token_to_id(tokenizer.cls_token)
        self.sep_id = tokenizer.token_to_id(tokenizer.sep_token)
        self.pad_id = tokenizer.token_to_id(tokenizer.pad_token)
        self.packer = keras_hub.layers.MultiSegmentPacker(
            sequence_length=sequence_length, start_value=self.cls_id, end_value=self.sep_id,
            pad_value=self.pad_id)

    @staticmethod
    def check_settings(tokenizer, sequence_length, doc_stride, max_question_length):
        """Refuses settings no window fits, and a tokenizer of another kind,
        naming the value; needs no vocabulary (a task checks them when it is
        built, before `.keras` loading has restored the vocabulary)."""
        if not isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
            raise ValueError(f"Extractive question answering needs a WordPiece (BERT-family) tokenizer, received "
                             f"{type(tokenizer).__name__}.")
        if max_question_length + 3 >= sequence_length:
            raise ValueError(f"`max_question_length` {max_question_length} leaves no room for the context in a "
                             f"sequence of {sequence_length}; use at most {sequence_length - 4}.")
        if not 0 < doc_stride <= sequence_length - max_question_length - 3:
            raise ValueError(f"`doc_stride` must be in [1, {sequence_length - max_question_length - 3}] (the "
                             f"shortest context window), received {doc_stride!r}.")

    def __call__(self, questions, contexts):
        """Windows of `questions` (string `[B]`) on `contexts` (string `[B]`).

        Returns:
            A dict: `token_ids`, `segment_ids`, `padding_mask` (`[W,
            sequence_length]`), `example` (int32 `[W]`, the pair each window
            is cut from, in order) and `offsets` (int32 `[W, sequence_length,
            2]`, byte offsets in the context, -1 outside it).
        """
        question_ids = self.fast_tokenizer.tokenize(questions)[:, : self.max_question_length]
        context_ids, starts, ends = self.fast_tokenizer.tokenize_with_offsets(contexts)
        question_length = tf.cast(question_ids.row_lengths(), tf.int32)
        context_length = tf.cast(context_ids.row_lengths(), tf.int32)
        width = self.sequence_length - 3 - question_length  # Context tokens a window holds.
        windows = 1 + tf.maximum(0, -(-(context_length - width) // self.doc_stride))
        example = tf.repeat(tf.range(tf.shape(questions)[0], dtype=tf.int32), windows)
        first = tf.ragged.range(windows).flat_values * self.doc_stride
        last = tf.minimum(first + tf.gather(width, example), tf.gather(context_length, example))
        positions = tf.ragged.range(first, last) + tf.cast(
            tf.gather(context_ids.row_starts(), example), tf.int32)[:, None]
        window_ids = tf.gather(context_ids.flat_values, positions)
        token_ids, segment_ids = self.packer((tf.gather(question_ids, example), window_ids))
        # Offsets line up with the packed positions: [CLS] question [SEP] window [SEP] padding.
        lead_length = tf.gather(question_length, example) + 2
        lead = tf.RaggedTensor.from_row_lengths(tf.fill([tf.reduce_sum(lead_length)], -1), tf.cast(lead_length, tf.int64))
        offsets = [
            tf.concat([lead, tf.gather(tf.cast(flat, tf.int32), positions)], axis=1)
            .to_tensor(-1, shape=[None, self.sequence_length])
            for flat in (starts.flat_values, ends.flat_values)
        ]
        return {
            "token_ids": token_ids,
            "segment_ids": segment_ids,
            "padding_mask": token_ids != self.pad_id,
            "example": example,
            "offsets": tf.stack(offsets, axis=-1),
        }

    def windows(self, questions, contexts, batch_size=256, verbose=0):
        """Windows of Python lists `questions` and `contexts`, tokenised in
        batches, as `SpanWindows`.

        Example:
        >>> windows = spans.windows([q.question for q in data], [q.context for q in data])
        """
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts.")
        progress = progress_bar(len(questions), "cutting into windows", "question", verbose)
        run = tf.function(self.__call__, input_signature=[tf.TensorSpec([None], tf.string)] * 2)
        parts = []
        for begin in range(0, len(questions), batch_size):
            output = run(tf.constant(questions[begin:begin + batch_size], tf.string),
                         tf.constant(contexts[begin:begin + batch_size], tf.string))
            part = {name: tensor.numpy() for name, tensor in output.items()}
            part["example"] = part["example"] + begin
            parts.append(part)
            progress.add(min(batch_size, len(questions) - begin))
        joined = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        arrays = {name: joined[name].astype("int32") for name in ("token_ids", "segment_ids", "padding_mask")}
        return SpanWindows(arrays, arrays["padding_mask"].sum(axis=1).astype("int32"), joined["example"],
                           joined["offsets"])


def span_targets(windows, answers, contexts):
    """The start and end positions of each window's answer: `[N, 2]` int32,
    `(0, 0)` (the `[CLS]` position) for a window that does not hold the
    whole answer (or a question with no answer).

    Args:
        windows: `SpanWindows`.
        answers: per question, `(text, character_start)` of the answer
            trained on, or `None` for no answer.
        contexts: per question, its context (to turn characters into bytes).

    Example:
    >>> targets = span_targets(windows, [q.answers[0] for q in data], [q.context for q in data])
    """
    byte_spans = np.full((len(answers), 2), -1, dtype=np.int64)
    for row, (answer, context) in enumerate(zip(answers, contexts)):
        if answer is not None:
            text, start = answer
            byte_start = len(context[:start].encode("utf-8"))
            byte_spans[row] = byte_start, byte_start + len(text.encode("utf-8"))
    begin, end = byte_spans[windows.example, 0][:, None], byte_spans[windows.example, 1][:, None]
    token_start, token_end = windows.offsets[..., 0], windows.offsets[..., 1]
    inside = token_start >= 0
    covers = (inside & (token_start <= begin)).any(axis=1) & (inside & (token_end >= end)).any(axis=1)
    covers &= begin[:, 0] >= 0
    start = np.argmax(inside & (token_end > begin), axis=1)
    last = inside & (token_start < end)
    stop = last.shape[1] - 1 - np.argmax(last[:, ::-1], axis=1)
    targets = np.where(covers[:, None], np.stack([start, stop], axis=1), 0)
    return targets.astype("int32")
