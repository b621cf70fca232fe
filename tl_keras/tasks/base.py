"""What every tl_keras task shares: a preset folder that holds the whole
fine-tuned task, and the training settings a `fit` call takes.

A task preset of a one-backbone task is a KerasHub preset folder (the
fine-tuned backbone's `config.json` and `model.weights.h5`, and the
preprocessor's files, so any `--backbone` loads it) plus
`tl_keras_task.json` (the task's class and settings) and the task's own
weights (`head.weights.h5`, ...). A task of two backbones
(`CatalogueRecognizer`) keeps each in a KerasHub preset folder of its own.

Example:
>>> classifier.save_to_preset("presets/reviews")
>>> TextClassifier.from_preset("presets/reviews").predict_labels(["great phone"])
"""

import json
import pathlib
import shutil
import tempfile
import uuid

import keras
import numpy as np
import tensorflow as tf

from tl_keras.data.texts import MULTILABEL_SEPARATOR, MULTILABEL_THRESHOLD, sorted_names
from tl_keras.evaluation.classification import evaluate_predictions, write_report
from tl_keras.training.distribution import global_batch_size
from tl_keras.training.privacy import wants_privacy
from tl_keras.training.trainer import (DEFAULT_BACKBONE_LEARNING_RATES, TrainingConfig, TrainingData, fit_phase,
                                       predict_through_cache, train, train_head_on_features)
from tl_keras.transfer.domain_adaptation import DannSchedule, DomainPairs, build_adaptation_trainer
from tl_keras.transfer.self_training import changed_share, confident_pseudo_labels
from tl_keras.transfer.strategies import apply_trainability, discriminative_optimizer

TASK_FILE = "tl_keras_task.json"


def read_task_config(preset, task_class):
    """The task settings stored in a preset folder, or `None` if the folder
    is a plain backbone preset. A preset of another task class is refused,
    naming both."""
    path = pathlib.Path(str(preset)) / TASK_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not a readable task file ({error}).") from None
    if config.get("class") != task_class.__name__:
        raise ValueError(f"{preset} holds a {config.get('class')!r} task, not a {task_class.__name__!r}; load it "
                         f"with tl_keras.{config.get('class')}.from_preset.")
    return config


def write_preset(folder, task, config, write_parts):
    """Writes a task preset atomically: `write_parts(staging)` saves the
    backbone, preprocessor and weights into a hidden staging folder, then
    `tl_keras_task.json` is written and the folder renamed into place."""
    folder = pathlib.Path(folder)
    if folder.exists():
        raise FileExistsError(f"{folder} already exists; choose a new folder for the preset.")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        write_parts(staging)
        (staging / TASK_FILE).write_text(json.dumps({"class": type(task).__name__, **config}, indent=2))
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


class TransferTask:
    """The base of the task models (with `keras.Model`): `save_to_preset`
    from two hooks a task defines, `task_config()` (JSON-ready settings)
    and `write_preset_parts(folder)` (backbone, preprocessor, weights)."""

    def save_to_preset(self, preset_dir):
        """Saves the whole task (fine-tuned backbone, preprocessor, head,
        labels, settings) as a preset folder, atomically; `from_preset`
        of the same class loads it, and any `--backbone` takes it.

        Example:
        >>> task.save_to_preset("presets/reviews_v1")
        """
        return write_preset(preset_dir, self, self.task_config(), self.write_preset_parts)

    def task_config(self):
        raise NotImplementedError

    def config_parts(self):
        """The Keras objects `get_config` serializes beside `task_config()`
        (KerasHub's tasks serialize their backbone and preprocessor)."""
        return {"backbone": self.backbone, "preprocessor": self.preprocessor}

    def get_config(self):
        """`task_config()` with `config_parts()` serialized, so `.keras`
        files round-trip (each task's `from_config` reads it back)."""
        return serialized(self, self.task_config(), **self.config_parts())

    def write_preset_parts(self, folder):
        raise NotImplementedError

    def merged(self):
        """This task, or with LoRA (`strategy` `lora:R`) a copy with the LoRA
        factors merged into the kernels (through a preset), as export wants
        it."""
        if self.strategy.kind != "lora":
            return self
        return self.merged_copy()

    def merged_copy(self, **settings):
        """A copy of this task through a preset (so LoRA factors are merged
        into the kernels), loaded frozen with `from_preset(**settings)`
        (such as a classifier's `dtype`).

        Example:
        >>> half = classifier.merged_copy(dtype="float16")
        """
        with tempfile.TemporaryDirectory() as folder:
            self.save_to_preset(pathlib.Path(folder) / "merged")
            return type(self).from_preset(pathlib.Path(folder) / "merged", strategy="frozen", **settings)


class Classifier(TransferTask):
    """The base of the classifiers (with `keras.Model`): `fit`, `predict`,
    `predict_labels` and `evaluate_report` on raw inputs, which a classifier
    turns into arrays with `transfer_inputs(x)` (`None` for what Keras' own
    methods take). It needs the attributes `vocabulary`, `strategy` and
    `feature_cache`, and is an `EncoderHeadModel`."""

    def transfer_inputs(self, x, verbose=0):
        raise NotImplementedError

    def card(self, **facts):
        """What a notebook export's `model_card.json` says beside the
        signatures, as a command-line run's does: the backbone (the preset it
        came from), the metrics of each split `evaluate_report` scored and,
        after a private `fit`, the (ε, δ) it spent."""
        backbone = getattr(self, "preset", None) or type(self.backbone).__name__
        metrics = getattr(self, "evaluated", None)
        return {"backbone": backbone, **({"metrics": metrics} if metrics else {}), "strategy": str(self.strategy),
                **({"privacy": dict(self.privacy)} if self.privacy else {}), **facts}

    def targets(self, labels, origins=None):
        """Model targets for raw labels: class names (strings), or, as
        KerasHub takes them, integer class indices into
        `vocabulary.names` (unless every name is itself an integer, as with
        `num_classes`: then an integer is looked up by name); numbers for
        regression."""
        labels = list(labels)
        if self.vocabulary.task == "classification" and labels and all(_is_integer(label) for label in labels):
            named = all(name.lstrip("-").isdigit() for name in self.vocabulary.names)
            if not named:
                wrong = [label for label in labels if not 0 <= int(label) < len(self.vocabulary.names)]
                if wrong:
                    raise ValueError(f"Integer label {int(wrong[0])!r} is not a class index in "
                                     f"[0, {len(self.vocabulary.names)}) of {list(self.vocabulary.names)}.")
                return np.asarray(labels, "int32")
        return self.vocabulary.encode([str(int(label)) if _is_integer(label) else str(label) for label in labels],
                                      origins)

    def fit(self, x=None, y=None, batch_size=16, epochs=3, verbose=1, callbacks=None, validation_data=None,
            distribution=None, **settings):
        """Trains with the classifier's transfer strategy on raw inputs
        (texts, images: see `transfer_inputs`) and their labels; what
        Keras' own `fit` takes (tensors, `tf.data` datasets) goes to it
        unchanged. The arguments come in Keras' order.

        A classifier the user compiled (`classifier.compile(optimizer=...)`)
        trains the strategy's last phase with that optimizer (and loss and
        metrics, where given); otherwise with the strategy's own.

        Args:
            x, y: raw inputs and labels (class names or integer class
                indices; numbers for regression).
            batch_size, epochs: the strategy's main phase; the batch is
                global (split across replicas).
            verbose: progress bars (1) or none (0).
            callbacks: Keras callbacks for every phase.
            validation_data: `(inputs, labels)` scored each epoch, or `None`.
            distribution: a `tf.distribute.Strategy` (the current one if
                `None`); build the classifier under its scope.
            **settings: other `TrainingConfig` fields (`head_learning_rate`,
                `backbone_learning_rate`, `layer_decay`, `warmup_epochs`,
                `seed`, `backup_dir`, ...).

        Returns:
            A `keras.callbacks.History`; its `history` has a `"phase"` list.

        Example:
        >>> classifier.fit(["great phone", "broke in a week"], [1, 0], batch_size=2, epochs=2)
        """
        callbacks = list(callbacks or ())
        train_inputs = self.transfer_inputs(x, verbose)
        if train_inputs is None:  # Keras' own fit; a dataset carries its own batches and order.
            batch_size = None if isinstance(x, tf.data.Dataset) else batch_size
            settings.setdefault("shuffle", not isinstance(x, tf.data.Dataset))
            return super().fit(x, y, validation_data=validation_data, epochs=epochs, batch_size=batch_size,
                               callbacks=list(callbacks), verbose=verbose, **settings)
        validation_inputs = validation_targets = None
        if validation_data is not None:
            validation_inputs, validation_targets = self.transfer_inputs(validation_data[0]), self.targets(validation_data[1])
        data = TrainingData(train_inputs, self.targets(y), validation_inputs, validation_targets)
        config = training_config(epochs, batch_size, {"verbose": verbose, **settings})
        _, history = train(self, self.strategy, data, config, self.feature_cache, distribution, callbacks)
        return history_of(history)

    def fit_features(self, features, batch_size=256, epochs=3, verbose=1, callbacks=None, validation_data=None,
                     seed=0, **settings):
        """Trains the head on a corpus's frozen-encoder features in shards
        (`ShardedFeatures`, written from a stream larger than memory), a
        shard at a time; the `frozen` strategy only.

        Args:
            features: a `ShardedFeatures` made with this task's encoder.
            batch_size, epochs, verbose, callbacks: as for `fit`.
            validation_data: a `ShardedFeatures` scored each epoch, or `None`.
            seed: the shuffling and initialisation seed.
            **settings: other `TrainingConfig` fields (`head_learning_rate`).

        Example:
        >>> rows = stream_labelled_texts("reviews/train-*.jsonl.gz")
        >>> features = ShardedFeatures.write(task.encoder, task.preprocessor, rows, "runs/features", task.targets)
        >>> task.fit_features(features, batch_size=256, epochs=3)
        """
        if self.strategy.kind != "frozen":
            raise ValueError("fit_features trains the head on frozen features; it needs strategy='frozen', "
                             f"this task has {self.strategy.kind!r}.")
        config = training_config(epochs, batch_size, {"verbose": verbose, "seed": seed, **settings})
        train_dataset = features.dataset(batch_size, shuffle=True, seed=seed)
        validation_dataset = validation_data.dataset(batch_size) if validation_data is not None else None
        _, history = train_head_on_features(self, train_dataset, validation_dataset, config,
                                            callbacks=list(callbacks or ()))
        return history_of(history)

    def self_train(self, x, batch_size=16, epochs=1, verbose=0, callbacks=None, distribution=None,
                   shares=(0.6, 0.9), min_change=0.01, **settings):
        """Adapts this classifier to unlabelled inputs from another domain
        by self-training: each round it predicts them, keeps the most
        confident `share` (balanced over the predicted classes) with its
        predictions as labels, and trains on those for `epochs` more
        epochs with its own strategy (no warm-up: the head is trained
        already). The rounds take `shares` in turn and stop early when
        fewer than `min_change` of the predictions changed since the last
        round (no target labels needed). Measured on the 12 pairs of Amazon
        product categories in `benchmarks/amazon_domains.py` (`partial:2`,
        three seeds): +2.4 points over source-only on average, every pair
        from +0.4 to +6.9; one seed alone lost 1.75 on a pair where the
        source model was already above what target labels give (+0.9 on
        the small shifts of `transfer_between_domains.py`); compare before
        shipping.

        Args:
            x: raw unlabelled inputs of the target domain (texts, images).
            batch_size, epochs, verbose, callbacks, distribution: as `fit`
                (`epochs`: training epochs a round).
            shares: the share of `x` pseudo-labelled in each round.
            min_change: stop when fewer predictions than this share change.
            **settings: other `TrainingConfig` fields (`head_learning_rate`,
                `seed`, ...), as `fit`.

        Returns:
            A list with a dict a round: `share`, `selected`, `changed`.

        Example:
        >>> classifier.fit(source_texts, source_labels, epochs=3)
        >>> classifier.self_train(target_texts, shares=(0.6, 0.9))
        """
        if self.vocabulary.task != "classification":
            raise ValueError(f"Self-training needs a classification task, received {self.vocabulary.task!r}.")
        if wants_privacy(training_config(epochs, batch_size, settings)):
            raise ValueError("Self-training has no DP-SGD accounting across its rounds; train privately with `fit`.")
        inputs = self.transfer_inputs(x, verbose)  # Tokenised or decoded once for every round.
        if inputs is None:
            raise ValueError(f"`x` must be raw inputs (texts, images), received {type(x)!r}.")
        rounds, previous = [], None
        for share in shares:
            probabilities = self.predict(inputs, batch_size=64)
            predictions = probabilities.argmax(-1)
            changed = 1.0 if previous is None else changed_share(previous, predictions)
            if previous is not None and changed < min_change:
                break
            rows, labels = confident_pseudo_labels(probabilities, share)
            if verbose:
                print(f"self-training: {len(rows)} of {len(predictions)} pseudo-labelled (share {share:g}), "
                      f"{changed:.1%} of the predictions changed since the last round")
            self.fit(inputs.take(rows), [self.vocabulary.names[label] for label in labels], batch_size, epochs,
                     verbose, callbacks, distribution=distribution, **{**settings, "warmup_epochs": 0})
            rounds.append({"share": share, "selected": int(len(rows)), "changed": changed})
            previous = predictions
        return rounds

    def fit_adapted(self, x, y, unlabelled, method="coral", batch_size=16, epochs=3, verbose=0, callbacks=None,
                    distribution=None, adaptation_weight=1.0, alpha=10.0, hidden_dim=128, **settings):
        """Trains on labelled source inputs and unlabelled target-domain
        inputs at once, through the backbone with the classifier's strategy:
        each step takes a source batch (the task loss) and a target batch,
        and adds the adaptation loss on both batches' encoder features,
        CORAL's covariance distance or DANN's domain confusion (its gradient
        reversal ramped over training). One phase through the trainer
        (`fit_phase`: the distribution's scope, backups, the same learning
        rates as `fit`), no head warm-up: the source-only baseline is `fit`
        with the same strategy, epochs and batches. Measured on the review
        domains in `benchmarks/transfer_between_domains.py`.

        Args:
            x, y: labelled source inputs (texts, images) and labels.
            unlabelled: raw inputs of the target domain.
            method: `"coral"` or `"dann"`.
            batch_size, epochs, verbose, callbacks: as `fit` (`batch_size`
                rows a step of each domain, global).
            distribution: a `tf.distribute.Strategy` (the current one if
                `None`); build the classifier under its scope.
            adaptation_weight: the adaptation loss's weight.
            alpha: DANN's ramp of the reversal (2 / (1 + exp(-α p)) - 1).
            hidden_dim: DANN's domain classifier width.
            **settings: other `TrainingConfig` fields (`head_learning_rate`,
                `backbone_learning_rate`, `seed`, `backup_dir`, ...).

        Returns:
            A `keras.callbacks.History`.

        Example:
        >>> classifier.fit_adapted(amazon_texts, amazon_labels, yelp_texts, method="coral", adaptation_weight=10)
        """
        if self.vocabulary.task != "classification":
            raise ValueError(f"Domain adaptation needs a classification task, received {self.vocabulary.task!r}.")
        source, target = self.transfer_inputs(x, verbose), self.transfer_inputs(unlabelled, verbose)
        if source is None or target is None:
            raise ValueError("`x` and `unlabelled` must be raw inputs (texts, images).")
        config = training_config(epochs, batch_size, {"verbose": verbose, **settings})
        distribution = distribution or tf.distribute.get_strategy()
        keras.utils.set_random_seed(config.seed)
        with distribution.scope():
            trainer, reversal = build_adaptation_trainer(self, method, adaptation_weight, hidden_dim)
            apply_trainability(self, self.strategy)  # The trainer's encoder and head are this classifier's.
            rate = config.backbone_learning_rate or DEFAULT_BACKBONE_LEARNING_RATES.get(self.strategy.kind, 5e-5)
            loss, metrics = self.loss_and_metrics()
            arguments = {"optimizer": discriminative_optimizer(self, config.head_learning_rate, rate), "loss": loss,
                         "metrics": metrics}
        batch = global_batch_size(config.batch_size, distribution)
        dataset = DomainPairs(source, target).dataset(self.targets(y), batch, shuffle=config.shuffle,
                                                      seed=config.seed)
        schedule = [] if reversal is None else [DannSchedule(reversal, epochs, -(-len(source) // batch), alpha)]
        history = fit_phase(trainer, arguments, dataset, None, 0, epochs, config, distribution,
                            [*schedule, *(callbacks or ())], method)
        return history_of(history)

    def predict(self, x, batch_size=64, verbose=0, **kwargs):
        """Probabilities (classification, multilabel) or values
        (regression, `[N, 1]`) for raw inputs; other inputs go to Keras'
        own `predict`."""
        inputs = self.transfer_inputs(x)
        if inputs is None:
            return super().predict(x, batch_size=batch_size, verbose=verbose, **kwargs)
        return inputs.predict(self, batch_size, verbose)

    def predict_labels(self, x, batch_size=64):
        """The label of each input: a class name, the comma-joined names over
        the threshold (multilabel), or a float (regression)."""
        outputs = self.predict(x, batch_size)
        names = np.asarray(self.vocabulary.names, dtype=object)
        if self.vocabulary.task == "regression":
            return outputs[:, 0].tolist()
        if self.vocabulary.task == "multilabel":
            return [MULTILABEL_SEPARATOR.join(names[row >= MULTILABEL_THRESHOLD]) for row in outputs]
        return names[outputs.argmax(axis=1)].tolist()

    def evaluate_report(self, x, y, out_dir=None, split="test", history=None, batch_size=64):
        """Metrics of the classifier on inputs `x` with labels `y`, named by
        `split`; with `out_dir`, writes `metrics.json`, the confusion matrix
        and (given `history`: the `History` `fit` returned, or its dict) the
        learning curve there.

        Returns:
            The metrics dict (with `"split"`).
        """
        inputs = self.transfer_inputs(x)
        outputs = predict_through_cache(self, inputs, self.feature_cache, batch_size)
        metrics = {"split": split, **evaluate_predictions(outputs, self.targets(y), self.vocabulary)}
        self.evaluated = {**getattr(self, "evaluated", {}), split: metrics}  # For the export's model card.
        if out_dir is not None:
            write_report(metrics, getattr(history, "history", history) or {}, out_dir)
        return metrics


def serialized(task, settings, **parts):
    """A task's Keras config as KerasHub's tasks write it: its Keras parts
    (backbone, preprocessor, ...) serialized, its JSON-ready `settings`, its
    name and trainability; `deserialized` reads it back."""
    return {**{name: keras.saving.serialize_keras_object(part) for name, part in parts.items()}, **settings,
            "name": task.name, "trainable": task.trainable}


def deserialized(config, *part_names):
    """`(parts, settings)` of a config written by `serialized`: the named
    parts deserialized (`None` stays `None`), the rest as given."""
    settings = dict(config)
    parts = {name: None if settings.get(name) is None else keras.saving.deserialize_keras_object(settings.pop(name))
             for name in part_names}
    return parts, settings


def refuse_overrides(preset, task_class, **given):
    """Raises `ValueError` naming the `from_preset` arguments given (not
    `None`) that a restored task of `task_class` cannot apply: an argument
    is applied or refused, never ignored."""
    given = {name: value for name, value in given.items() if value is not None}
    if given:
        names = ", ".join(f"{name}={value!r}"[:80] for name, value in given.items())
        raise ValueError(f"{preset} holds a saved {task_class.__name__}, which restores its own settings; "
                         f"{task_class.__name__}.from_preset cannot apply {names} to it. Load it without them, "
                         "or build a new one from a backbone preset.")


def class_names(labels, num_classes):
    """The class names a classifier is built with: `labels`, or KerasHub's
    `num_classes` as the names `"0"` ... `"n-1"` (class indices); both must
    agree when both are given."""
    if num_classes is None:
        return None if labels is None else sorted_names(labels)
    if not _is_integer(num_classes) or num_classes < 2:
        raise ValueError(f"`num_classes` must be an integer >= 2, received {num_classes!r}.")
    if labels is not None and len(set(map(str, labels))) != num_classes:
        raise ValueError(f"`num_classes={num_classes}` but {len(set(map(str, labels)))} `labels`: {list(labels)!r}.")
    return sorted_names(labels) if labels is not None else tuple(str(i) for i in range(num_classes))


def head_changes(stored, **given):
    """The head settings given to `from_preset` that differ from a saved
    task's (`None` means not given): any of them means a new head on the
    fine-tuned backbone (sequential transfer) instead of the saved one."""
    return {name: value for name, value in given.items()
            if value is not None and value != (tuple(stored[name]) if isinstance(stored[name], list) else stored[name])}


def _is_integer(label):
    return isinstance(label, (int, np.integer)) and not isinstance(label, (bool, np.bool_))


def training_config(epochs, batch_size, settings):
    """A `TrainingConfig` from a `fit` call's epochs, batch size and any
    other `TrainingConfig` field given as a keyword."""
    return TrainingConfig(epochs=epochs, batch_size=batch_size, **settings)


def history_of(history):
    """A Keras `History` holding a dict of per-epoch lists, as `fit` returns."""
    callback = keras.callbacks.History()
    callback.history = history
    return callback
