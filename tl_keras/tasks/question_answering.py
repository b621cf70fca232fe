"""`QuestionAnswerer`: extractive question answering on a BERT-family
backbone, in KerasHub's style: `from_preset`, `fit` on SQuAD questions,
`predict` on question and context strings, `save_to_preset`, `export`.

Contexts longer than a window are cut into overlapping windows
(`doc_stride`); the answer is the best span over all of a question's windows
(`max_answer_length` tokens at most). Tokenising, windows and decoding are the
same TensorFlow code in `predict` and in the exported SavedModel.
"""

import pathlib

import keras
import tensorflow as tf

from tl_keras.core.choices import SPAN_STRATEGY
from tl_keras.core.files import write_json
from tl_keras.data.spans import SpanTokenizer, span_targets
from tl_keras.evaluation.squad import squad_scores
from tl_keras.export.question_answering import export_question_answering
from tl_keras.models.backbones import load_text_backbone
from tl_keras.models.extractive_qa import SpanAccuracy, SpanLoss, answer_questions
from tl_keras.models.heads import EncoderHeadModel, build_sequence_encoder, build_span_head
from tl_keras.tasks.base import TransferTask, deserialized, history_of, read_task_config, training_config
from tl_keras.training.trainer import TrainingData, train
from tl_keras.transfer.feature_cache import FeatureCache
from tl_keras.transfer.strategies import parse_strategy


class ValidationF1(keras.callbacks.Callback):
    """Scores SQuAD F1 on validation questions after every epoch (logged as
    `val_f1` and `val_exact_match`) and puts back the weights of the best
    epoch when training ends.

    Example:
    >>> reader.fit(train_questions, epochs=3, callbacks=[ValidationF1(reader, validation_questions)])
    """

    def __init__(self, answerer, questions):
        super().__init__()
        self.answerer, self.questions = answerer, questions
        self.best_f1, self.best_epoch, self.best_weights = -1.0, None, None

    def on_epoch_end(self, epoch, logs=None):
        scores = self.answerer.evaluate_report(self.questions, split="validation")
        if logs is not None:
            logs["val_f1"], logs["val_exact_match"] = scores["f1"], scores["exact_match"]
        print(f"epoch {epoch + 1}: validation F1 {scores['f1']:.1f}, exact match {scores['exact_match']:.1f}")
        if scores["f1"] > self.best_f1:
            self.best_f1, self.best_epoch = scores["f1"], epoch + 1
            self.best_weights = [weight.numpy() for weight in self.answerer.weights]

    def on_train_end(self, logs=None):
        if self.best_weights is not None:
            for weight, value in zip(self.answerer.weights, self.best_weights):
                weight.assign(value)


@keras.saving.register_keras_serializable(package="tl_keras")
class QuestionAnswerer(TransferTask, EncoderHeadModel):
    """A text backbone with a span head (a start and an end logit a token),
    as one Keras model on the backbone's token inputs, with its windowing
    tokenizer.

    Args:
        backbone: a KerasHub BERT-family `Backbone`.
        preprocessor: its `TextClassifierPreprocessor` (for the tokenizer).
        strategy: `"full"`, `"partial:N"`, `"lora:R"` or `"frozen"`.
        sequence_length: token positions a window.
        doc_stride: tokens from one window's start to the next's.
        max_question_length: question tokens kept.
        max_answer_length: the longest answer, in tokens.
        no_answer_threshold: `None` always answers (SQuAD v1.1); a number
            lets the model answer `""` (SQuAD v2.0).
        dropout: the head's dropout rate.

    Example:
    >>> reader = QuestionAnswerer.from_preset(minilm_l6_offline_path())
    >>> reader.fit(read_squad("train.json"), epochs=2)
    >>> reader.predict(["Who won?"], ["The Denver Broncos won Super Bowl 50."])[0]["answer"]
    'The Denver Broncos'
    """

    def __init__(self, backbone, preprocessor, strategy=SPAN_STRATEGY, sequence_length=256, doc_stride=128,
                 max_question_length=64, max_answer_length=30, no_answer_threshold=None, dropout=0.1, **kwargs):
        encoder = build_sequence_encoder(backbone)
        head = build_span_head(encoder.output.shape[-1], dropout)
        super().__init__(encoder, head, name=kwargs.pop("name", "question_answerer"), **kwargs)
        self.backbone, self.preprocessor = backbone, preprocessor
        self.strategy = parse_strategy(strategy)
        SpanTokenizer.check_settings(preprocessor.tokenizer, sequence_length, doc_stride, max_question_length)
        self.window_settings = (sequence_length, doc_stride, max_question_length)
        self._span_tokenizer = None
        self.max_answer_length, self.no_answer_threshold, self.dropout = max_answer_length, no_answer_threshold, dropout
        self._answer = None

    @classmethod
    def from_preset(cls, preset, strategy=SPAN_STRATEGY, sequence_length=None, doc_stride=None, max_question_length=None,
                    max_answer_length=None, no_answer_threshold=None, dropout=None):
        """A question answerer on a KerasHub preset (Kaggle handle, preset
        folder, Hugging Face folder), or one saved by `save_to_preset`
        (whole, with its span head; every setting given here applies to it).

        Example:
        >>> QuestionAnswerer.from_preset("presets/product_qa").predict([question], [context])
        """
        stored = read_task_config(preset, cls) or {}
        settings = {"sequence_length": sequence_length or stored.get("sequence_length", 256),
                    "doc_stride": doc_stride or stored.get("doc_stride", 128),
                    "max_question_length": max_question_length or stored.get("max_question_length", 64),
                    "max_answer_length": max_answer_length or stored.get("max_answer_length", 30),
                    "no_answer_threshold": no_answer_threshold if no_answer_threshold is not None
                    else stored.get("no_answer_threshold")}
        backbone, preprocessor = load_text_backbone(preset, settings["sequence_length"])
        dropout = stored.get("dropout", 0.1) if dropout is None else dropout
        answerer = cls(backbone, preprocessor, strategy, dropout=dropout, **settings)
        if stored:
            answerer.head.load_weights(str(pathlib.Path(str(preset)) / "head.weights.h5"))
        return answerer

    @property
    def span_tokenizer(self):
        """The `SpanTokenizer`, made on first use: it reads the vocabulary,
        which a `.keras` file restores only after the task is built."""
        if self._span_tokenizer is None:
            self._span_tokenizer = SpanTokenizer(self.preprocessor.tokenizer, *self.window_settings)
        return self._span_tokenizer

    def loss_and_metrics(self):
        """The span loss (start and end cross-entropy) and span accuracy."""
        return SpanLoss(), [SpanAccuracy()]

    # --- Data ---------------------------------------------------------------

    def windows(self, questions, verbose=0):
        """`SpanWindows` of `Question`s, with their span targets (the first
        gold answer; `[CLS]` for a window without it)."""
        texts, contexts = [q.question for q in questions], [q.context for q in questions]
        windows = self.span_tokenizer.windows(texts, contexts, verbose=verbose)
        targets = span_targets(windows, [q.answers[0] if q.answers else None for q in questions], contexts)
        return windows, targets

    def fit(self, x=None, y=None, batch_size=16, epochs=2, verbose=1, callbacks=None, validation_data=None,
            distribution=None, **settings):
        """Trains on `Question`s (`tl_keras.data.squad.read_squad`) with the
        transfer strategy; what Keras' own `fit` takes (token dicts,
        datasets of `(tokens, [start, end])`) goes to it unchanged.

        Args:
            x: `Question`s.
            validation_data: `Question`s scored each epoch (window loss and
                SQuAD F1, `val_f1`); the best epoch's weights are kept.
            epochs, batch_size: epochs and windows a step (global batch).
            **settings: other `TrainingConfig` fields (`backbone_learning_rate`,
                `head_learning_rate`, `layer_decay`, `warmup_epochs`, `seed`).

        Returns:
            A `keras.callbacks.History`.
        """
        if not isinstance(x, (list, tuple)):
            batch_size = None if isinstance(x, tf.data.Dataset) else batch_size
            return super().fit(x, y, validation_data=validation_data, epochs=epochs, batch_size=batch_size,
                               callbacks=list(callbacks or ()), verbose=verbose, **settings)
        train_windows, train_targets = self.windows(x, verbose)
        validation_windows = validation_targets = None
        if validation_data:
            validation_windows, validation_targets = self.windows(validation_data, verbose)
        data = TrainingData(train_windows, train_targets, validation_windows, validation_targets)
        callbacks = list(callbacks or ())
        if validation_data:
            callbacks = [*callbacks, ValidationF1(self, list(validation_data))]
        config = training_config(epochs, batch_size, {"verbose": verbose, "warmup_epochs": 0, **settings})
        _, history = train(self, self.strategy, data, config, FeatureCache(), distribution, callbacks)
        self._answer = None
        return history_of(history)

    # --- Answers --------------------------------------------------------------

    def predict(self, questions, contexts=None, batch_size=32, n_best=1, verbose=0, **kwargs):
        """Answers for question and context strings (or `Question`s with
        `contexts=None`); other inputs go to Keras' own `predict` (logits).

        Returns:
            A list of dicts, one a question: `answer`, `score` (the span's
            probability in its window), `start` and `end` (character offsets
            in the context, end exclusive; -1 for no answer); with
            `n_best > 1` each value is a list, best first.

        Example:
        >>> reader.predict(["Who won?"], ["The Denver Broncos won."])
        [{'answer': 'The Denver Broncos', 'score': 0.91, 'start': 0, 'end': 18}]
        """
        if contexts is None and isinstance(questions, (list, tuple)) and questions and not isinstance(
                questions[0], str):
            questions, contexts = [q.question for q in questions], [q.context for q in questions]
        if contexts is None:
            return super().predict(questions, batch_size=batch_size, verbose=verbose, **kwargs)
        questions, contexts = list(questions), list(contexts)
        if len(questions) != len(contexts):
            raise ValueError(f"{len(questions)} questions but {len(contexts)} contexts.")
        for name, texts in (("questions", questions), ("contexts", contexts)):
            bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
            if bad is not None:
                raise ValueError(f"`{name}` must be strings; item {bad} is {texts[bad]!r}.")
        run = self._answer_function(n_best)
        results = []
        for begin in range(0, len(questions), batch_size):
            outputs = {name: value.numpy() for name, value in run(
                tf.constant(questions[begin:begin + batch_size], tf.string),
                tf.constant(contexts[begin:begin + batch_size], tf.string)).items()}
            for row in range(len(outputs["answer"])):
                result = {"answer": [a.decode("utf-8") for a in outputs["answer"][row]],
                          "score": outputs["score"][row].tolist(), "start": outputs["start"][row].tolist(),
                          "end": outputs["end"][row].tolist()}
                results.append(result if n_best > 1 else {name: value[0] for name, value in result.items()})
        return results

    def _answer_function(self, n_best):
        if self._answer is None or self._answer[0] != n_best:
            spans = self.span_tokenizer  # Made here, eagerly: not inside the function's trace.
            function = tf.function(
                lambda questions, contexts: answer_questions(self, spans, questions, contexts,
                                                             self.max_answer_length, n_best,
                                                             self.no_answer_threshold),
                input_signature=[tf.TensorSpec([None], tf.string)] * 2)
            self._answer = (n_best, function)
        return self._answer[1]

    def predictions(self, questions, batch_size=32):
        """A dict of question id to answer text for `Question`s, as SQuAD's
        evaluation takes them."""
        answers = self.predict(questions, batch_size=batch_size)
        return {question.id: answer["answer"] for question, answer in zip(questions, answers)}

    def evaluate_report(self, x, y=None, out_dir=None, split="test", batch_size=32):
        """SQuAD exact match and F1 on `Question`s `x` (which hold their
        answers, so `y` is `None`, as in `fit`), named by `split`; with
        `out_dir`, also `metrics.json` and `predictions.json` there.

        Example:
        >>> reader.evaluate_report(test_questions)["f1"]
        """
        if y is not None:
            raise ValueError(f"`y` must be None: `Question`s hold their answers; received {type(y).__name__}.")
        predictions = self.predictions(x, batch_size)
        metrics = {"split": split, **squad_scores(predictions, x)}
        if out_dir is not None:
            pathlib.Path(out_dir).mkdir(parents=True, exist_ok=True)
            write_json(pathlib.Path(out_dir) / "metrics.json", metrics)
            write_json(pathlib.Path(out_dir) / "predictions.json", predictions)
        return metrics

    # --- Presets and export ---------------------------------------------------

    def task_config(self):
        sequence_length, doc_stride, max_question_length = self.window_settings
        return {"sequence_length": sequence_length, "doc_stride": doc_stride,
                "max_question_length": max_question_length, "max_answer_length": self.max_answer_length,
                "no_answer_threshold": self.no_answer_threshold, "dropout": self.dropout,
                "strategy": str(self.strategy)}

    @classmethod
    def from_config(cls, config):
        parts, settings = deserialized(config, "backbone", "preprocessor")
        return cls(parts["backbone"], parts["preprocessor"], **settings)

    def write_preset_parts(self, folder):
        self.backbone.save_to_preset(str(folder))
        self.preprocessor.save_to_preset(str(folder))
        self.head.save_weights(str(folder / "head.weights.h5"))

    def export(self, export_dir, model_name, version=None, warmup=(), card=None):
        """Writes the TF Serving SavedModel (`question`, `context` in;
        `answer`, `score`, `start`, `end` out) as
        `export_dir/model_name/<version>/`; see
        `tl_keras.export.question_answering`.

        Example:
        >>> reader.export("exports", "product_qa")
        PosixPath('exports/product_qa/1')
        """
        model = self.merged()
        return export_question_answering(model, model.span_tokenizer, export_dir, model_name, version,
                                         self.max_answer_length, self.no_answer_threshold, warmup,
                                         {"strategy": str(self.strategy), **(card or {})})
