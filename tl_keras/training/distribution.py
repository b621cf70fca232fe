"""Choosing the `tf.distribute` strategy, batch sizes, precision, and which
worker writes.

`--distribute auto` picks `MultiWorkerMirroredStrategy` when `TF_CONFIG`
names a cluster of several workers, `MirroredStrategy` when more than one GPU
is visible, and the default (single-device) strategy otherwise.
"""

import functools
import json
import os
import shutil
import tempfile
import warnings

import keras
import tensorflow as tf

from tl_keras.core.choices import DISTRIBUTIONS, PRECISIONS


def cluster_spec():
    """Returns `TF_CONFIG` as a dict (empty if unset), naming it on error."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except ValueError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {raw[:200]!r}") from None
    return config


def _cluster_size(config):
    return sum(len(tasks) for tasks in config.get("cluster", {}).values())


def pick_distribution(choice="auto"):
    """Returns the `tf.distribute.Strategy` for `choice`.

    Args:
        choice: `"auto"`, `"none"`, `"mirrored"` (all local GPUs, or all
            local logical devices) or `"multi_worker"` (the cluster in
            `TF_CONFIG`).

    Example:
    >>> distribution = pick_distribution("auto")
    >>> with distribution.scope():
    ...     model = build_text_model(...)
    """
    if choice not in DISTRIBUTIONS:
        raise ValueError(f"`distribute` must be one of {DISTRIBUTIONS}, received {choice!r}.")
    if choice == "auto":
        if _cluster_size(cluster_spec()) > 1:
            choice = "multi_worker"
        elif len(tf.config.list_logical_devices("GPU")) > 1:
            choice = "mirrored"
        else:
            choice = "none"
    if choice == "none":
        return tf.distribute.get_strategy()
    if choice == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
        return _mirrored_strategy(tuple(devices))
    if _cluster_size(cluster_spec()) < 1:
        raise ValueError("`distribute='multi_worker'` needs TF_CONFIG naming the cluster and this worker's task.")
    return tf.distribute.MultiWorkerMirroredStrategy()


@functools.lru_cache(maxsize=None)
def _mirrored_strategy(devices):
    # One MirroredStrategy a process for the same devices: a second one's
    # collective all-reduces clash with the first's ("Shape mismatch in the
    # collective instance", tensorflow#62790), so a second training run in
    # the same process (a notebook, a benchmark) would fail.
    return tf.distribute.MirroredStrategy(list(devices))


def is_multi_worker(distribution):
    return isinstance(distribution, tf.distribute.MultiWorkerMirroredStrategy) and \
        distribution.extended._in_multi_worker_mode()


def is_chief():
    """True on the worker that writes outputs: the `chief` task if the
    cluster has one, else worker 0, and always outside a cluster."""
    config = cluster_spec()
    task = config.get("task", {})
    if not task or _cluster_size(config) <= 1:
        return True
    if "chief" in config.get("cluster", {}):
        return task.get("type") == "chief"
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0


def worker_name():
    """`"chief"`, or `"<type>-<index>"` of this task in `TF_CONFIG`; names
    per-worker folders such as backups."""
    task = cluster_spec().get("task", {})
    if not task or is_chief():
        return "chief"
    return f"{task.get('type', 'worker')}-{task.get('index', 0)}"


class WorkerOutput:
    """The folder this worker writes to: `path` on the chief, a temporary
    folder (removed on exit) on the other workers, which must still run the
    same collective steps (saving, exporting) but must not write results.

    Example:
    >>> with WorkerOutput("runs/reviews") as folder:
    ...     write_report(metrics, history, folder)
    """

    def __init__(self, path):
        self.path = path
        self._temporary = None

    def __enter__(self):
        if is_chief():
            return self.path
        self._temporary = tempfile.mkdtemp(prefix="tl_keras_worker_")
        return self._temporary

    def __exit__(self, *exc):
        if self._temporary:
            shutil.rmtree(self._temporary, ignore_errors=True)


def global_batch_size(per_replica_batch_size, distribution):
    """The global batch: per-replica batch times the replicas in sync."""
    if per_replica_batch_size < 1:
        raise ValueError(f"The per-replica batch size must be >= 1, received {per_replica_batch_size!r}.")
    return per_replica_batch_size * distribution.num_replicas_in_sync


def set_precision(policy="float32"):
    """Sets Keras' global dtype policy. Mixed precision runs on GPUs only; on
    a CPU-only machine it is left at float32, with a warning. Heads keep a
    float32 output layer either way (see `heads.build_head`).

    Returns the policy in force.
    """
    if policy not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {PRECISIONS}, received {policy!r}.")
    if policy != "float32" and not tf.config.list_physical_devices("GPU"):
        warnings.warn(f"precision={policy!r} needs a GPU; none is visible, so training stays float32.")
        policy = "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy
