"""`TextClassifier`: a pretrained text backbone with a trainable head, for
classification, multi-label classification or regression, in KerasHub's
style: `from_preset`, `fit` on raw strings, `predict_labels`,
`save_to_preset`, `export`.
"""

import json
import pathlib
import gc
import warnings

import keras
import numpy as np
import tensorflow as tf

from tl_keras.core.choices import TEXT_STRATEGY
from tl_keras.data.texts import LabelVocabulary
from tl_keras.data.tokens import TokenizedTexts, is_pairs, make_dataset, tokenize
from tl_keras.evaluation.explanations import explain_texts
from tl_keras.export.text import export_text_model
from tl_keras.models.backbones import default_pooling, load_text_backbone
from tl_keras.models.heads import EncoderHeadModel, build_encoder, build_head, pool
from tl_keras.tasks.base import Classifier, class_names, deserialized, head_changes, read_task_config
from tl_keras.training.config import TrainingConfig
from tl_keras.training.trainer import fit_phase
from tl_keras.transfer.distillation import (
    DistillationLoss,
    distillation_targets,
    soft_targets,
    student_backbone,
)
from tl_keras.transfer.feature_cache import FeatureCache
from tl_keras.transfer.strategies import apply_trainability, parse_strategy


def _as_texts(texts, what="texts"):
    """A list of strings, or of `(text, text_pair)` tuples; KerasHub's
    `(texts, text_pairs)` (a tuple of two lists) becomes the latter."""
    if (isinstance(texts, tuple) and len(texts) == 2
            and all(isinstance(part, (list, np.ndarray)) for part in texts)):
        if len(texts[0]) != len(texts[1]):
            raise ValueError(f"`{what}`: {len(texts[0])} texts but {len(texts[1])} text pairs.")
        texts = list(zip(*texts))
    texts = [tuple(text) if isinstance(text, (tuple, list)) else text for text in texts] \
        if not isinstance(texts, str) else texts
    pairs = isinstance(texts, list) and is_pairs(texts)
    valid = (lambda text: isinstance(text, tuple) and len(text) == 2 and all(isinstance(t, str) for t in text)) \
        if pairs else (lambda text: isinstance(text, str))
    if isinstance(texts, str) or not all(valid(text) for text in texts):
        raise ValueError(f"`{what}` must be a list of strings or of (text, text_pair) string tuples, received "
                         f"{type(texts).__name__} {str(texts)[:60]!r}.")
    return texts


@keras.saving.register_keras_serializable(package="tl_keras")
class TextClassifier(Classifier, EncoderHeadModel):
    """A text backbone, a pooling and a trainable head, as one Keras model
    taking the backbone's token inputs, with its preprocessor and labels.

    `fit` and `predict` take raw strings (tokenised once, batched by length,
    frozen features cached) or, as any Keras model, token dicts and
    `tf.data` datasets. The transfer `strategy` says what trains.

    Args:
        backbone: a KerasHub text `Backbone`.
        preprocessor: its `TextClassifierPreprocessor`.
        vocabulary: the `LabelVocabulary` (task and class names).
        pooling: `"mean"`, `"cls"`, `"last"` (decoders) or `"pooled"`.
        strategy: `"frozen"`, `"partial:N"`, `"full"` or `"lora:R"`.
        hidden_dim: width of an optional hidden head layer; 0 for none.
        dropout: the head's dropout rate.

    Example:
    >>> classifier = TextClassifier.from_preset(minilm_l6_offline_path(), labels=["neg", "pos"],
    ...                                         strategy="partial:2", sequence_length=64)
    >>> classifier.fit(["great phone", "broke in a week"], ["pos", "neg"], epochs=2)
    >>> classifier.predict_labels(["works well"])
    ['pos']
    """

    def __init__(self, backbone, preprocessor, vocabulary, pooling="mean", strategy=TEXT_STRATEGY, hidden_dim=0,
                 dropout=0.1, **kwargs):
        encoder = build_encoder(backbone, pooling)
        head = build_head(encoder.output.shape[-1], vocabulary.num_outputs, vocabulary.task, hidden_dim, dropout)
        super().__init__(encoder, head, vocabulary.task, name=kwargs.pop("name", "text_classifier"), **kwargs)
        self.backbone, self.preprocessor, self.vocabulary = backbone, preprocessor, vocabulary
        self.pooling, self.strategy = pooling, parse_strategy(strategy)
        self.hidden_dim, self.dropout = hidden_dim, dropout
        self.feature_cache = FeatureCache()
        self.token_cache_dir = None
        self.text_pairs = False  # Set by `fit`: trained on (text, text_pair) tuples.

    @classmethod
    def from_config(cls, config):
        parts, settings = deserialized(config, "backbone", "preprocessor")
        settings.pop("sequence_length", None)  # The preprocessor's own.
        vocabulary = LabelVocabulary(settings.pop("task"), tuple(settings.pop("labels")))
        text_pairs = settings.pop("text_pairs", False)
        classifier = cls(parts["backbone"], parts["preprocessor"], vocabulary, **settings)
        classifier.text_pairs = text_pairs
        return classifier

    @classmethod
    def from_preset(cls, preset, labels=None, num_classes=None, task=None, strategy=TEXT_STRATEGY, sequence_length=None,
                    pooling=None, hidden_dim=None, dropout=None, dtype=None):
        """A classifier on a KerasHub preset: a Kaggle handle, a preset
        folder, a Hugging Face folder, or a folder written by
        `save_to_preset`.

        A saved classifier comes back whole (head, labels, settings);
        `strategy`, `sequence_length`, `dropout` and `dtype` apply to it.
        Head settings that differ from its own (`labels`/`num_classes`,
        `task`, `pooling`, `hidden_dim`) give its fine-tuned backbone a new
        head instead (sequential transfer), keeping the saved values of
        those not given.

        Args:
            preset: the preset.
            labels: the class names (classification, multilabel); not
                needed for regression or a saved classifier.
            num_classes: KerasHub's alternative to `labels`: classes named
                `"0"` ... `"n-1"`, so `fit` takes integer class indices.
            task: `"classification"` (the default), `"multilabel"` or
                `"regression"`.
            strategy: what `fit` trains (see `TextClassifier`).
            sequence_length: token positions a text (128, or the saved one).
            pooling: `None` picks the backbone's default (or the saved one).
            hidden_dim, dropout: the head's shape (0 and 0.1, or the saved
                ones).
            dtype: the backbone's dtype policy (`"float16"`), or `None`.

        Example:
        >>> TextClassifier.from_preset("bert_base_en_uncased", num_classes=2)
        >>> TextClassifier.from_preset("presets/shop_a", labels=["bad", "good", "mixed"])  # A new head.
        """
        labels = class_names(labels, num_classes)
        stored = read_task_config(preset, cls)
        if stored is not None:
            stored_task = stored["task"]
            changes = head_changes(stored, labels=labels, task=task, pooling=pooling, hidden_dim=hidden_dim)
            if "task" in changes and changes["task"] != "regression" and labels is None:
                raise ValueError(f"{preset} holds a {stored_task} classifier; a {task} head needs `labels`.")
            backbone, preprocessor = load_text_backbone(preset, sequence_length or stored["sequence_length"], dtype)
            task = task or stored_task
            vocabulary = LabelVocabulary(task, () if task == "regression" else tuple(stored["labels"]))
            if "labels" in changes or "task" in changes:
                vocabulary = LabelVocabulary.from_labels(list(labels or ()), task)
            classifier = cls(backbone, preprocessor, vocabulary,
                             pooling or stored["pooling"], strategy,
                             stored["hidden_dim"] if hidden_dim is None else hidden_dim,
                             stored["dropout"] if dropout is None else dropout)
            if not changes:
                classifier.head.load_weights(str(pathlib.Path(str(preset)) / "head.weights.h5"))
                classifier.text_pairs = stored.get("text_pairs", False)
            classifier.preset = str(preset)
            return classifier
        task = task or "classification"
        if task == "regression":
            vocabulary = LabelVocabulary("regression", ())
        else:
            if not labels:
                raise ValueError(f"`labels` (or `num_classes`) must name the classes of a {task} task, "
                                 f"received {labels!r}.")
            vocabulary = LabelVocabulary.from_labels(list(labels), task)
        backbone, preprocessor = load_text_backbone(preset, sequence_length or 128, dtype)
        classifier = cls(backbone, preprocessor, vocabulary, pooling or default_pooling(preset, backbone), strategy,
                         hidden_dim or 0, 0.1 if dropout is None else dropout)
        classifier.preset = str(preset)
        return classifier

    # --- Data ---------------------------------------------------------------

    def tokenize(self, texts, verbose=0):
        """Token ids of raw `texts` (strings, or `(text, text_pair)` tuples
        packed as one sequence; once; on disk when `token_cache_dir` is
        set), as `TokenizedTexts`."""
        return tokenize(_as_texts(texts), self.preprocessor, verbose=verbose, cache_dir=self.token_cache_dir)

    def fit(self, x=None, y=None, *args, **kwargs):
        """`Classifier.fit`; trained on `(text, text_pair)` tuples (or
        KerasHub's `(texts, text_pairs)`), the classifier becomes a text-pair
        classifier: its export takes `text` and `text_pair`.

        Example:
        >>> classifier.fit([("usb-c cable", "USB-C charging cable 1 m")], ["match"], epochs=3)
        """
        if isinstance(x, (list, tuple)) and not isinstance(x, str) and x:
            self.text_pairs = is_pairs(_as_texts(x))
        return super().fit(x, y, *args, **kwargs)

    def transfer_inputs(self, x, verbose=0):
        """Raw texts as `TokenizedTexts`, or `None` for what Keras' own
        `fit`/`predict` take (token dicts, datasets)."""
        if isinstance(x, TokenizedTexts):
            return x
        if isinstance(x, (list, tuple)) or (isinstance(x, np.ndarray) and x.dtype.kind in "UO"):
            return self.tokenize(x, verbose)
        return None

    def outputs_of_sequence(self, sequence_output, padding_mask):
        """This classifier's pooling and head over the backbone's sequence
        output: its explanation hook (`explain_texts` enters the backbone
        after the token embedding lookup and ends here)."""
        return self.head(pool(sequence_output, padding_mask, self.pooling))

    def explain(self, texts, labels=None, steps=64):
        """Per-token integrated-gradients attributions of the decision for
        each text (see `tl_keras.evaluation.explanations`); write them for
        people with `write_explanations`.

        Example:
        >>> [e.tokens for e in classifier.explain(["broke in a week"])]
        """
        return explain_texts(self.backbone, self.preprocessor, self.outputs_of_sequence, self.vocabulary.names, texts,
                             labels, steps)

    def distill(self, texts, labels=None, unlabelled_texts=(), num_blocks=2, temperature=2.0, hard_weight=0.5,
                epochs=16, batch_size=16, learning_rate=3e-4, seed=1234, verbose=0, distribution=None):
        """A smaller student taught by this classifier: `num_blocks`
        transformer blocks taken from this backbone, trained on this
        classifier's softened probabilities over `texts` and
        `unlabelled_texts` (and, with weight `hard_weight`, on `labels`);
        see `tl_keras.transfer.distillation`. Returns the student, a
        `TextClassifier` that saves and exports like any other. The defaults
        are those measured in `benchmarks/compression.py` (MiniLM-L6, 6 → 2
        blocks: 3.3x lower p50, 1.2 points lower accuracy, with unlabelled
        transfer texts).

        Example:
        >>> student = teacher.distill(train_texts, train_labels, yelp_texts, num_blocks=2)
        """
        keras.utils.set_random_seed(seed)
        distribution = distribution or tf.distribute.get_strategy()
        with distribution.scope():
            student = TextClassifier(student_backbone(self.backbone, num_blocks), self.preprocessor,
                                     self.vocabulary, self.pooling, "full", self.hidden_dim, self.dropout)
        student.head.set_weights(self.head.get_weights())
        student.text_pairs = self.text_pairs
        apply_trainability(student, student.strategy)  # All but a pooler the head does not read.
        all_texts = list(texts) + list(unlabelled_texts)
        tokens = self.tokenize(all_texts, verbose)
        hard = None
        if labels is not None:
            hard = np.concatenate([self.targets(labels), -np.ones(len(unlabelled_texts), "int32")])
        targets = distillation_targets(soft_targets(self.predict(tokens), temperature), hard)
        # Through the trainer's phase runner, as every training path: backups, a labelled phase.
        config = TrainingConfig(epochs=epochs, batch_size=batch_size, seed=seed, verbose=verbose)
        arguments = {"optimizer": keras.optimizers.AdamW(learning_rate),
                     "loss": DistillationLoss(temperature, hard_weight), "metrics": []}
        fit_phase(student, arguments, make_dataset(tokens, targets, batch_size, shuffle=True, seed=seed), None, 0,
                  epochs, config, distribution, [], "distillation")
        return student

    # --- Presets and export ---------------------------------------------------

    def task_config(self):
        return {"task": self.vocabulary.task, "labels": list(self.vocabulary.names), "pooling": self.pooling,
                "hidden_dim": self.hidden_dim, "dropout": self.dropout, "strategy": str(self.strategy),
                "sequence_length": self.preprocessor.sequence_length, "text_pairs": self.text_pairs}

    def write_preset_parts(self, folder):
        self.backbone.save_to_preset(str(folder))  # LoRA factors are saved merged into the kernels.
        self.preprocessor.save_to_preset(str(folder))
        self.head.save_weights(str(folder / "head.weights.h5"))
        if self.pooling in ("mean", "cls"):  # So `default_pooling` reads the choice back for `--backbone`.
            (folder / "1_Pooling").mkdir()
            (folder / "1_Pooling" / "config.json").write_text(json.dumps(
                {"pooling_mode_mean_tokens": self.pooling == "mean", "pooling_mode_cls_token": self.pooling == "cls"}))

    def export(self, export_dir, model_name, version=None, warmup=(), card=None, quantize=None):
        """Writes the TF Serving SavedModel (raw text in, labels out) as
        `export_dir/model_name/<version>/`; see `tl_keras.export.text`.
        `quantize="int8"` stores the dense and embedding kernels as int8
        (Keras' post-training quantization: per-channel weight scales,
        activations quantized on the fly); `"float16"` stores the backbone's
        weights in half precision (and computes in it); the signatures are
        the same.

        Example:
        >>> classifier.export("exports", "reviews")
        PosixPath('exports/reviews/1')
        """
        card = self.card(pooling=self.pooling, quantization=quantize or "none",
                         sequence_length=self.preprocessor.sequence_length, **(card or {}))
        # A warm-up request even when none is given, so TF Serving's first real request is not the slow one.
        warmup = list(warmup) or [("warm-up text", "warm-up text") if self.text_pairs else "warm-up text"]
        if quantize not in (None, "int8", "float16"):
            raise ValueError(f"`quantize` must be None, 'int8' or 'float16', received {quantize!r}.")
        model = self.merged_copy(dtype="float16") if quantize == "float16" else self.merged()
        if quantize == "int8":
            model = model.merged_copy() if model is self else model
            with warnings.catch_warnings():  # Layers without weights (softmax, inputs) say they have no quantize.
                warnings.filterwarnings("ignore", message=".*does not have a `quantize` method")
                # Keras collects garbage each time a layer drops its float
                # kernel (40 full collections of a heap holding TensorFlow's
                # graphs: most of the export's time); frozen, the objects
                # that exist already are not rescanned, and one collection
                # after frees the kernels.
                gc.freeze()
                try:
                    for part in (model.backbone, model.head):  # Not the (unbuilt) tokenizer.
                        part.quantize("int8")
                finally:
                    gc.unfreeze()
                    gc.collect()
        return export_text_model(model, self.preprocessor, self.vocabulary, export_dir, model_name, version,
                                 warmup_texts=warmup, card=card, text_pairs=self.text_pairs)

