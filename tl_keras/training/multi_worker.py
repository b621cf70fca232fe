"""`fit` for `MultiWorkerMirroredStrategy`, while Keras' own one fails.

Upstream bug: https://github.com/keras-team/keras/issues/20585 ("Attempt to
convert a value (PerReplica...)"), reproduced with TF 2.21 / Keras 3.15 on two
loopback workers. Keras 3's `model.fit` breaks twice under a multi-worker
strategy (keras/src/backend/tensorflow/trainer.py):
1. `_maybe_symbolic_build` takes the first distributed batch and reduces it
   eagerly with `strategy.reduce("MEAN", batch)`; the collective all-reduce
   cannot convert the eager `PerReplica` batch to a tensor.
2. `reduce_per_replica` then reduces each step's scalar metrics with
   `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars
   ("Invalid reduction dimension 0 for input with 0 dimensions").

The fix here is the smallest loop around Keras' own pieces: the model's own
`train_step` and `test_step` run under `strategy.run` inside a `tf.function`,
their metrics are averaged over replicas with `axis=None`, and the caller's
callbacks (progress bar, history, `BackupAndRestore`, CSV logs) are driven as
`fit` drives them. Gradients are all-reduced by the Keras optimizer itself.

`fit` below is the one place that chooses between this loop and Keras'
`model.fit`; `tl_keras.training.trainer` and `tl_keras.training.continued_pretraining` call
it. To remove once upstream is fixed: delete this module and call
`model.fit(..., shuffle=False)` where `fit` is called.
"""

import keras
import tensorflow as tf

from tl_keras.training.distribution import is_multi_worker


def _distributed_step(distribution, step_function):
    @tf.function
    def run(iterator):
        logs = distribution.run(step_function, args=(next(iterator),))
        return {name: distribution.reduce("MEAN", value, axis=None) for name, value in logs.items()}

    return run


def fit(model, distribution, train_dataset, validation_dataset=None, initial_epoch=0, epochs=1, callbacks=(),
        verbose=1):
    """Trains `model` like `model.fit(train_dataset, validation_data=...,
    initial_epoch=..., epochs=..., callbacks=...)`; returns its `History`.

    Under a multi-worker `distribution` it runs the loop of this module (both
    datasets then need a known cardinality, which
    `tl_keras.data.tokens.make_dataset` sets); under any other it is
    Keras' own `model.fit`, with `shuffle=False` because the datasets
    shuffle themselves.

    Example:
    >>> with distribution.scope():
    ...     model.compile(optimizer, loss, metrics)
    >>> history = fit(model, distribution, train_dataset, validation_dataset, epochs=3)
    """
    arguments = dict(initial_epoch=initial_epoch, epochs=epochs, callbacks=list(callbacks), verbose=verbose)
    if not is_multi_worker(distribution):
        return model.fit(train_dataset, validation_data=validation_dataset, shuffle=False, **arguments)
    return _fit_multi_worker(model, train_dataset, validation_dataset, **arguments)


def _fit_multi_worker(model, train_dataset, validation_dataset, initial_epoch, epochs, callbacks, verbose):
    distribution = model.distribute_strategy
    steps = int(train_dataset.cardinality())
    if steps < 1:
        raise ValueError(f"The training dataset needs a known, positive cardinality; received {steps}.")
    with distribution.scope():
        model.optimizer.build(model.trainable_variables)
    train_step = _distributed_step(distribution, model.train_step)
    test_step = _distributed_step(distribution, model.test_step)
    train_data = distribution.experimental_distribute_dataset(train_dataset)
    validation_data = None
    if validation_dataset is not None:
        validation_data = distribution.experimental_distribute_dataset(validation_dataset)
    callback_list = keras.callbacks.CallbackList(
        callbacks, add_history=True, add_progbar=verbose != 0, model=model,
        verbose=verbose, epochs=epochs, steps=steps,
    )
    model.stop_training = False
    callback_list.on_train_begin()
    # `BackupAndRestore.on_train_begin` records the epoch to resume from here,
    # where Keras' own `fit` reads it.
    first_epoch = max(initial_epoch, getattr(model, "_initial_epoch", None) or 0)
    logs = {}
    for epoch in range(first_epoch, epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        iterator = iter(train_data)
        for step in range(steps):
            callback_list.on_train_batch_begin(step)
            logs = train_step(iterator)
            callback_list.on_train_batch_end(step, logs)
            if model.stop_training:
                break
        logs = {name: float(value) for name, value in logs.items()}
        if validation_data is not None:
            model.reset_metrics()
            iterator = iter(validation_data)
            for _ in range(int(validation_dataset.cardinality())):
                validation_logs = test_step(iterator)
            logs.update({f"val_{name}": float(value) for name, value in validation_logs.items()})
        callback_list.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    callback_list.on_train_end(logs)
    model._initial_epoch = None  # As Keras' `fit` leaves it.
    return model.history
