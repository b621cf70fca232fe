"""Training an `EncoderHeadModel` (every task is one) with a transfer
strategy. The trainer reads the model's `encoder`, `head`,
`loss_and_metrics()` and `compiled_by_user`, and nothing else of it.

`train` runs the strategy's phases with plain `compile` and `fit`:
- `frozen`: the head trains on cached encoder features (`FeatureCache`),
  or through the frozen backbone when the inputs are augmented.
- `partial:N` and `lora:R`: one phase, head and unfrozen weights together.
- `full`: fastai-style, a head warm-up on cached features with the backbone
  frozen, then everything at discriminative learning rates.

A model the user compiled (`model.compile(optimizer=...)`) trains its last
phase with that optimizer (and loss and metrics, where given).
"""

import csv
import dataclasses
import pathlib

import keras
import numpy as np
import tensorflow as tf

from tl_keras.training.config import TrainingConfig
from tl_keras.training import multi_worker
from tl_keras.training.distribution import global_batch_size, pick_distribution, set_precision, worker_name
from tl_keras.training.privacy import PrivateTraining, plan, wants_privacy
from tl_keras.training.runs import check_backups
from tl_keras.transfer.feature_cache import FeatureCache
from tl_keras.transfer.strategies import TransferStrategy, apply_trainability, discriminative_optimizer, merge_lora

DEFAULT_BACKBONE_LEARNING_RATES = {"partial": 5e-5, "full": 5e-5, "lora": 5e-4}


def prepare_distributed_training(training, output_dir, distribute="auto", precision="float32", resume=True,
                                 distribution=None, fingerprint=None, fresh=False):
    """Sets the precision policy, picks the `tf.distribute` strategy (unless
    `distribution` is given) and prints it.

    With `resume`, the run's `fingerprint` (`tl_keras.training.runs.run_fingerprint`)
    is kept beside the backups in `output_dir/backup`: unfinished backups of
    a run with another fingerprint stop this one, naming what changed, or
    are discarded when `fresh` (see `tl_keras.training.runs.check_backups`).

    Returns:
        `(distribution, training)`: `training` with, when `resume`, a
        backup folder of this worker's under `output_dir/backup`.

    Example:
    >>> distribution, training = prepare_distributed_training(TrainingConfig(batch_size=16), "runs/x")
    """
    set_precision(precision)
    distribution = distribution or pick_distribution(distribute)
    batch_size = global_batch_size(training.batch_size, distribution)
    name = type(distribution).__name__
    name = "one device (no tf.distribute strategy)" if name.startswith("_Default") else f"tf.distribute.{name}"
    print(f"{name}: {distribution.num_replicas_in_sync} replica(s), global batch "
          f"{batch_size} = {training.batch_size} per replica x {distribution.num_replicas_in_sync}")
    backup_dir = None
    if resume:
        check_backups(pathlib.Path(output_dir) / "backup", fingerprint or {}, fresh)
        backup_dir = str(pathlib.Path(output_dir) / "backup" / worker_name())
    return distribution, dataclasses.replace(training, backup_dir=backup_dir)


@dataclasses.dataclass
class TrainingData:
    """Training and validation inputs (`TokenizedTexts` or `ImageArray`:
    anything with `arrays`, `dataset(...)` and `predict(...)`) with their
    numpy targets."""

    train_inputs: object
    train_targets: np.ndarray
    validation_inputs: object
    validation_targets: np.ndarray


def _compile_arguments(model, optimizer, last_phase):
    """The phase's `compile` arguments: the trainer's optimizer and the
    model's loss and metrics, or in the last phase what the user compiled."""
    loss, metrics = model.loss_and_metrics()
    arguments = {"optimizer": optimizer, "loss": loss, "metrics": metrics}
    return {**arguments, **model.compiled_by_user} if last_phase else arguments


def fit_phase(fitted, arguments, train_dataset, validation_dataset, first_epoch, epochs, config, distribution,
              callbacks, phase, privacy=None):
    """Runs one named phase: compiles `fitted` with `arguments` under
    `distribution`'s scope and fits it (the multi-worker loop, per-epoch
    backups under `config.backup_dir/phase`, a labelled phase line); every
    training path goes through here. With `privacy` (a
    `tl_keras.training.privacy.Privacy`) each step is a DP-SGD step; a
    `config` asking for privacy without it (a path `train` does not plan
    for) is refused rather than trained without.

    Returns:
        The phase's history dict.

    Example:
    >>> history = fit_phase(model, {"optimizer": optimizer, "loss": loss}, dataset, None, 0, 3, config,
    ...                     tf.distribute.get_strategy(), [], "dann")
    """
    if privacy is None and wants_privacy(config):
        raise ValueError(f"The {phase} phase has no DP-SGD accounting; private training (dp_clip, dp_noise, "
                         "dp_epsilon) covers `fit` and the text and image recipes only.")
    if privacy is not None:
        with distribution.scope():
            fitted = PrivateTraining(fitted, privacy)
    with distribution.scope():
        keras.Model.compile(fitted, **arguments, jit_compile=config.jit_compile)  # Not a task's own `compile`.

    if config.verbose:
        print(f"{phase} phase: epochs {first_epoch + 1}-{first_epoch + epochs}"
              f"{' (the head alone, backbone frozen)' if phase == 'head' else ''}", flush=True)

    def fit(backup_callbacks):
        return multi_worker.fit(
            fitted, distribution, train_dataset, validation_dataset, initial_epoch=first_epoch,
            epochs=first_epoch + epochs, callbacks=[*backup_callbacks, *callbacks], verbose=config.verbose,
        ).history

    return _resumable(fit, config.backup_dir, phase)


def _fit_head_on_cache(model, data, config, cache, first_epoch, epochs, distribution, callbacks, last_phase,
                       privacy=None):
    encoder, head = model.encoder, model.head
    train_features = cache.features(encoder, data.train_inputs, verbose=config.verbose)
    train_dataset = tf.data.Dataset.from_tensor_slices((train_features, data.train_targets))
    if config.shuffle:
        train_dataset = train_dataset.shuffle(len(train_features), seed=config.seed, reshuffle_each_iteration=True)
    train_dataset = train_dataset.batch(config.batch_size).prefetch(tf.data.AUTOTUNE)
    validation_dataset = None
    if data.validation_inputs is not None:
        validation_features = cache.features(encoder, data.validation_inputs, verbose=config.verbose)
        validation_dataset = tf.data.Dataset.from_tensor_slices(
            (validation_features, data.validation_targets)
        ).batch(config.batch_size)
    return _fit_head_on_features(model, train_dataset, validation_dataset, config, first_epoch, epochs, distribution,
                                 callbacks, last_phase, privacy)


def _fit_head_on_features(model, train_dataset, validation_dataset, config, first_epoch, epochs, distribution,
                          callbacks, last_phase, privacy=None):
    with distribution.scope():
        arguments = _compile_arguments(model, keras.optimizers.AdamW(config.head_learning_rate), last_phase)
    return fit_phase(model.head, arguments, train_dataset, validation_dataset, first_epoch, epochs, config,
                     distribution, callbacks, "head", privacy)


def train_head_on_features(model, train_dataset, validation_dataset=None, config=None, distribution=None,
                           callbacks=()):
    """Trains an `EncoderHeadModel`'s head on datasets of `(features,
    targets)` batches (`ShardedFeatures.dataset`: a corpus larger than
    memory), the encoder frozen, as the `frozen` strategy trains it.

    Returns:
        `(model, history)`, as `train` returns them.

    Example:
    >>> model, history = train_head_on_features(model, features.dataset(256, shuffle=True), None, config)
    """
    config = config or TrainingConfig()
    distribution = distribution or tf.distribute.get_strategy()
    keras.utils.set_random_seed(config.seed)
    apply_trainability(model, TransferStrategy("frozen"))
    history = {}
    _append(history, _fit_head_on_features(model, train_dataset, validation_dataset, config, 0, config.epochs,
                                           distribution, callbacks, last_phase=True), "head")
    return model, history


def _datasets(data, config):
    """The training pipeline (shuffled, augmented where the inputs augment)
    and the validation pipeline."""
    train_dataset = data.train_inputs.dataset(data.train_targets, config.batch_size, shuffle=config.shuffle,
                                              seed=config.seed, training=True)
    if data.validation_inputs is None:
        return train_dataset, None
    return train_dataset, data.validation_inputs.dataset(data.validation_targets, config.batch_size)


def _fit_head_through_frozen_backbone(model, data, config, cache, first_epoch, epochs, distribution, callbacks,
                                      last_phase, privacy=None):
    # For augmented inputs (no `cache`: each epoch sees other pixels), the
    # backbone is frozen but runs on every batch.
    train_dataset, validation_dataset = _datasets(data, config)
    with distribution.scope():
        arguments = _compile_arguments(model, keras.optimizers.AdamW(config.head_learning_rate), last_phase)
    return fit_phase(model, arguments, train_dataset, validation_dataset, first_epoch, epochs, config, distribution,
                     callbacks, "head", privacy)


def _resumable(fit, backup_dir, phase):
    """Runs `fit(callbacks)` so that a killed run, started again with the
    same `backup_dir`, resumes from the phase's last completed epoch.

    `keras.callbacks.BackupAndRestore` keeps the weights, optimizer state and
    epoch; a CSV log keeps the per-epoch metrics of the earlier attempts,
    which a resumed `fit` would not return. Returns the whole phase's history.
    """
    if backup_dir is None:
        return fit([])
    folder = pathlib.Path(backup_dir) / phase
    log = pathlib.Path(backup_dir) / f"{phase}.csv"
    if log.exists() and not (folder / "training_metadata.json").exists():
        log.unlink()  # From an attempt whose phase had already finished.
    log.parent.mkdir(parents=True, exist_ok=True)
    fit([keras.callbacks.CSVLogger(str(log), append=True), keras.callbacks.BackupAndRestore(str(folder))])
    with open(log, newline="") as file:
        rows = {int(row.pop("epoch")): row for row in csv.DictReader(file)}  # A redone epoch wins.
    log.unlink()
    return {key: [float(rows[epoch][key]) for epoch in sorted(rows)] for key in next(iter(rows.values()))}


def _append(history, new, phase):
    for key, values in new.items():
        history.setdefault(key, []).extend(values)
    history.setdefault("phase", []).extend([phase] * len(next(iter(new.values()))))


def train(model, strategy, data, config=None, cache=None, distribution=None, callbacks=()):
    """Trains an `EncoderHeadModel` with a transfer strategy.

    Args:
        model: an `EncoderHeadModel` (a task, or `build_text_model` /
            `build_image_model`), built under `distribution.scope()`; its
            `loss_and_metrics()` gives the loss.
        strategy: a `TransferStrategy`.
        data: a `TrainingData`.
        config: a `TrainingConfig`.
        cache: a `FeatureCache` for `frozen` and the `full` warm-up; a fresh
            in-memory one if `None`.
        distribution: a `tf.distribute.Strategy`; the current one if `None`.
        callbacks: Keras callbacks for every `fit` call.

    Returns:
        `(model, history)`: the trained full model (LoRA merged into the
        kernels) and a dict of per-epoch metric lists, with a `"phase"` list
        naming each epoch's phase.

    Example:
    >>> model, history = train(model, parse_strategy("partial:2"), data, TrainingConfig(epochs=3))
    """
    config = config or TrainingConfig()
    cache = cache or FeatureCache()
    distribution = distribution or tf.distribute.get_strategy()
    # `batch_size` is per replica; the pipelines batch globally.
    config = dataclasses.replace(config, batch_size=global_batch_size(config.batch_size, distribution))
    keras.utils.set_random_seed(config.seed)
    history = {}
    private = wants_privacy(config)
    # Under DP-SGD every strategy first fits the head on frozen features (a private linear probe, as `full`
    # always does): noisy gradients through a random head would move the backbone's weights for nothing.
    warm_up = strategy.kind == "full" or (private and strategy.kind != "frozen")
    head_epochs = config.epochs if strategy.kind == "frozen" else config.warmup_epochs if warm_up else 0
    privacy, model.privacy = None, None
    if private:  # One budget over every phase that trains on the rows.
        privacy, model.privacy = plan(config, len(data.train_inputs),
                                      head_epochs + (0 if strategy.kind == "frozen" else config.epochs))
    if strategy.kind in ("frozen", "full") or head_epochs:
        apply_trainability(model, TransferStrategy("frozen"))
        if head_epochs:
            fit_head = _fit_head_on_cache if data.train_inputs.cacheable else _fit_head_through_frozen_backbone
            _append(history, fit_head(model, data, config, cache, 0, head_epochs, distribution, callbacks,
                                      last_phase=strategy.kind == "frozen", privacy=privacy), "head")
        if strategy.kind == "frozen":
            return model, history
    apply_trainability(model, strategy)
    backbone_rate = config.backbone_learning_rate or DEFAULT_BACKBONE_LEARNING_RATES[strategy.kind]
    layer_decay = config.layer_decay if strategy.kind == "full" else 1.0
    with distribution.scope():
        optimizer = discriminative_optimizer(model, config.head_learning_rate, backbone_rate, layer_decay)
        arguments = _compile_arguments(model, optimizer, last_phase=True)
    train_dataset, validation_dataset = _datasets(data, config)
    first_epoch = len(history.get("phase", []))
    _append(history, fit_phase(model, arguments, train_dataset, validation_dataset, first_epoch, config.epochs,
                               config, distribution, callbacks, strategy.kind, privacy), strategy.kind)
    return merge_lora(model), history


def predict_through_cache(model, inputs, cache, batch_size=64):
    """`model`'s outputs for `inputs` as the head applied to the encoder's
    features from `cache`: after frozen training the validation features are
    already there, so the backbone does not run again; after fine-tuning the
    encoder's weights differ and the features are computed afresh.

    Example:
    >>> probabilities = predict_through_cache(model, data.validation_inputs, cache)
    """
    features = cache.features(model.encoder, inputs, batch_size, verbose=0)
    return model.head.predict(features, batch_size=batch_size, verbose=0)
