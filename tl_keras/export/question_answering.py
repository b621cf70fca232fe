"""The extractive question answering SavedModel: question and context
strings in, the answer out.

Signature `serving_default`: `question` and `context` (DT_STRING, [-1] each)
to `answer` (DT_STRING, [-1]), `score` (float, [-1]: the span's probability
in its window), `start` and `end` (int32, [-1]: character offsets of the
answer in the context, end exclusive; -1 for no answer). Tokenisation with
offsets, the windows over long contexts and the span decoding all run inside
the graph (`tl_keras.models.extractive_qa.answer_questions`).
"""

import tensorflow as tf

from tl_keras.export.saved_model import ServingModule
from tl_keras.models.extractive_qa import answer_questions


class QuestionAnsweringModule(ServingModule):
    """The serving graph of a span model.

    Args:
        model: the trained span model (token inputs to logits).
        span_tokenizer: its `SpanTokenizer`.
        max_answer_length: the longest answer, in tokens.
        no_answer_threshold: see `answer_questions`.
    """

    def __init__(self, model, span_tokenizer, max_answer_length=30, no_answer_threshold=None):
        super().__init__("question_answering_serving")
        self._model = self.track(model)
        self.span_tokenizer = span_tokenizer
        self.max_answer_length, self.no_answer_threshold = max_answer_length, no_answer_threshold
        self.endpoint("serving_default", self._serve, [
            tf.TensorSpec([None], tf.string, name="question"), tf.TensorSpec([None], tf.string, name="context")])

    def _serve(self, question, context):
        outputs = answer_questions(self._model.value, self.span_tokenizer, question, context,
                                   self.max_answer_length, 1, self.no_answer_threshold)
        return {name: value[:, 0] for name, value in outputs.items()}


def export_question_answering(model, span_tokenizer, export_dir, model_name, version=None, max_answer_length=30,
                              no_answer_threshold=None, warmup=(), card=None):
    """Exports a span model as a TF Serving SavedModel, atomically.

    Args:
        model: the trained span model.
        span_tokenizer: its `SpanTokenizer` (runs inside the graph).
        export_dir, model_name, version: where (`export_dir/model_name/version/`).
        max_answer_length, no_answer_threshold: the decoding's settings.
        warmup: a few `(question, context)` pairs for warm-up requests.
        card: extra facts for `model_card.json`.

    Returns:
        The version folder, a `pathlib.Path`.

    Example:
    >>> export_question_answering(model, spans, "exports", "product_qa",
    ...                           warmup=[("How long is the warranty?", "Two years of warranty.")])
    """
    module = QuestionAnsweringModule(model, span_tokenizer, max_answer_length, no_answer_threshold)
    card = {"task": "extractive_question_answering", "parameters": int(model.count_params()),
            "sequence_length": span_tokenizer.sequence_length, "doc_stride": span_tokenizer.doc_stride,
            "max_question_length": span_tokenizer.max_question_length, "max_answer_length": max_answer_length,
            "no_answer_threshold": no_answer_threshold, **(card or {})}
    return module.write(export_dir, model_name, version, [{"question": [q], "context": [c]} for q, c in warmup],
                        card, batching=True)
