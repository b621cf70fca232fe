"""Differentially private training (DP-SGD, Abadi et al. 2016): every
example's gradient clipped to an L2 norm of `clip`, the clipped gradients
summed, Gaussian noise of standard deviation `noise_multiplier * clip` added
once per global batch, and the sum divided by the batch size; the privacy
spent is accounted by Google's `dp-accounting` (RDP).

Keras 3 has no DP-SGD (TensorFlow Privacy targets Keras 2), so the private
step is written here: `PrivateTraining` wraps the model a phase trains and
replaces `train_step` only; per-example gradients come from
`tf.vectorized_map` over the batch.

Sampling, stated as it is: batches are fixed-size slices of a reshuffled
epoch, and the accountant treats each step as Poisson sampling with rate
q = batch / rows (the approximation TensorFlow Privacy's and Opacus' defaults
make); `privacy["sampling"]` says so in every report.

Example:
>>> privacy = Privacy(clip=1.0, noise_multiplier=1.1)
>>> trainer = PrivateTraining(head, privacy)
>>> trainer.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
>>> trainer.fit(features, labels, batch_size=64, epochs=10)
>>> epsilon_spent(1.1, 64 / len(features), 10 * len(features) // 64, delta=1e-5)
"""

import dataclasses
import math

import keras
import tensorflow as tf

# Whole Rényi orders only: the fractional ones fail to converge at small
# noise (absl warnings); without them ε comes out at most 2.3% larger (more
# conservative) on the runs in benchmarks/RESULTS.md.
RDP_ORDERS = [*range(2, 65), 80, 96, 128, 256, 512]
SAMPLING = "shuffled fixed-size batches, accounted as Poisson sampling at rate q = batch / rows"


def _accountant(noise_multiplier, sampling_rate, steps):
    import dp_accounting  # Imported when a private run needs it (scipy is slow to load).

    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(sampling_rate, dp_accounting.GaussianDpEvent(noise_multiplier)), steps)
    accountant = dp_accounting.rdp.RdpAccountant(RDP_ORDERS)
    accountant.compose(event)
    return accountant


def epsilon_spent(noise_multiplier, sampling_rate, steps, delta):
    """The ε of `steps` Gaussian-mechanism steps at `noise_multiplier`, each
    on a Poisson sample of rate `sampling_rate`, at `delta` (RDP accounting).

    Example:
    >>> round(epsilon_spent(1.1, 0.01, 1000, 1e-5), 2)
    """
    if noise_multiplier <= 0:
        return math.inf
    return float(_accountant(noise_multiplier, sampling_rate, steps).get_epsilon(delta))


def noise_for_epsilon(epsilon, sampling_rate, steps, delta):
    """The smallest noise multiplier (to 0.5%) whose `steps` spend at most
    `epsilon` at `delta`; refuses a budget no noise below 1000 meets."""
    if not epsilon > 0:
        raise ValueError(f"`dp_epsilon` must be > 0, received {epsilon!r}.")
    low, high = 0.1, 1000.0
    if epsilon_spent(high, sampling_rate, steps, delta) > epsilon:
        raise ValueError(f"No noise multiplier up to {high:g} keeps {steps} steps at q={sampling_rate:.4g} within "
                         f"ε={epsilon:g}, δ={delta:g}; train fewer steps or allow a larger ε.")
    if epsilon_spent(low, sampling_rate, steps, delta) <= epsilon:
        return low
    while high / low > 1.005:  # Bisection on a log scale: ε falls as the noise grows.
        middle = math.sqrt(low * high)
        low, high = (low, middle) if epsilon_spent(middle, sampling_rate, steps, delta) <= epsilon else (middle, high)
    return high


@dataclasses.dataclass(frozen=True)
class Privacy:
    """The DP-SGD settings of a private step.

    Args:
        clip: the L2 bound of each example's gradient.
        noise_multiplier: the Gaussian noise's standard deviation over
            `clip` (0 for clipping alone: no privacy).
    """

    clip: float
    noise_multiplier: float

    def __post_init__(self):
        if not (isinstance(self.clip, (int, float)) and math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"`dp_clip` must be a number > 0, received {self.clip!r}.")
        if not (isinstance(self.noise_multiplier, (int, float)) and math.isfinite(self.noise_multiplier)
                and self.noise_multiplier >= 0):
            raise ValueError(f"`dp_noise` must be a number >= 0, received {self.noise_multiplier!r}.")


def unscaled(loss):
    """The per-example form of a Keras loss: a `Loss` object divides by the
    replicas in sync under a distribution, its `call` does not; a loss
    name or function is used as it is."""
    loss = keras.losses.get(loss) if isinstance(loss, str) else loss
    return loss.call if isinstance(loss, keras.losses.Loss) else loss


def clipped_gradients(model, loss, variables, x, y, clip):
    """Each example's gradient of `loss` for `variables`, scaled to an L2
    norm of at most `clip` (over all the variables together): a list of
    `[batch, *variable.shape]` tensors, one a variable."""
    per_example = unscaled(loss)

    def one(example):
        features, target = tf.nest.map_structure(lambda tensor: tensor[None], example)
        with tf.GradientTape() as tape:
            value = tf.reduce_mean(per_example(target, model(features, training=True)))
        gradients = tape.gradient(value, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        norm = tf.sqrt(tf.add_n([tf.reduce_sum(tf.square(gradient)) for gradient in gradients]))  # pfor has no L2Loss.
        scale = tf.minimum(1.0, clip / tf.maximum(norm, 1e-12))
        return [tf.cast(scale, gradient.dtype) * gradient for gradient in gradients]

    return tf.vectorized_map(one, (x, y))


def wants_privacy(config):
    """Whether a `TrainingConfig` asks for DP training."""
    return any(getattr(config, name, None) is not None for name in ("dp_clip", "dp_noise", "dp_epsilon"))


def plan(config, rows, epochs):
    """The `Privacy` of a run and the report of what it spends: `rows`
    training examples, `config.batch_size` a global step, `epochs` passes
    over them in all (every phase that trains on the rows counts).

    Returns:
        `(Privacy, report)`; `report` is `{epsilon, delta, noise_multiplier,
        clip, steps, sampling_rate, sampling, accountant}`, with δ
        `config.dp_delta` or 1/(10·rows) and the noise `config.dp_noise` or
        the least that keeps ε within `config.dp_epsilon`.
    """
    if config.dp_noise is not None and config.dp_epsilon is not None:
        raise ValueError(f"Give `dp_noise` or `dp_epsilon`, not both; received dp_noise={config.dp_noise!r} and "
                         f"dp_epsilon={config.dp_epsilon!r}.")
    if config.dp_noise is None and config.dp_epsilon is None:
        raise ValueError(f"DP training needs `dp_epsilon` (a budget) or `dp_noise` (a noise multiplier); received "
                         f"only dp_clip={config.dp_clip!r}.")
    batch = min(config.batch_size, rows)
    steps = epochs * math.ceil(rows / config.batch_size)
    rate = batch / rows
    delta = config.dp_delta if config.dp_delta is not None else 1.0 / (10 * rows)
    noise = config.dp_noise if config.dp_noise is not None else noise_for_epsilon(config.dp_epsilon, rate, steps,
                                                                                  delta)
    privacy = Privacy(1.0 if config.dp_clip is None else config.dp_clip, noise)
    return privacy, {"epsilon": epsilon_spent(noise, rate, steps, delta), "delta": delta,
                     "noise_multiplier": noise, "clip": privacy.clip, "steps": steps, "sampling_rate": rate,
                     "sampling": SAMPLING, "accountant": "RDP (dp-accounting)"}


class PrivateTraining(keras.Model):
    """Trains `model` with DP-SGD steps: per-example gradients clipped to
    `privacy.clip`, summed, Gaussian noise of std `noise_multiplier * clip`
    added once per global batch (on the first replica only, so the
    cross-replica sum holds one draw), divided by the global batch. Its
    weights are `model`'s; validation and prediction are `model`'s own.

    Args:
        model: the Keras model a phase trains.
        privacy: a `Privacy`.

    Example:
    >>> PrivateTraining(head, Privacy(clip=1.0, noise_multiplier=1.0)).compile("adam", loss).fit(dataset)
    """

    def __init__(self, model, privacy, **kwargs):
        super().__init__(name=f"private_{model.name}", **kwargs)
        self.model, self.privacy = model, privacy
        self.built = model.built  # Its weights are the model's (BackupAndRestore wants a built model).

    def call(self, inputs, training=False):
        return self.model(inputs, training=training)

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        variables = self.trainable_variables
        loss = unscaled(self.loss)  # What `compile` was given, one example at a time here.
        clipped = clipped_gradients(self.model, loss, variables, x, y, self.privacy.clip)
        context = tf.distribute.get_replica_context()
        first = tf.cast(tf.equal(context.replica_id_in_sync_group, 0), tf.float32) if context else 1.0
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        batch = tf.cast(tf.shape(y)[0] * replicas, tf.float32)
        deviation = self.privacy.noise_multiplier * self.privacy.clip
        totals = []
        for per_example in clipped:
            total = tf.reduce_sum(per_example, axis=0)
            noise = tf.random.normal(tf.shape(total), stddev=deviation, dtype=total.dtype)
            totals.append(total + tf.cast(first, total.dtype) * noise)
        gradients = [total / tf.cast(batch, total.dtype) for total in totals]
        self.optimizer.apply_gradients(zip(gradients, variables))  # Keras sums the replicas' gradients.
        predictions = self.model(x, training=False)
        self._loss_tracker.update_state(tf.reduce_mean(loss(y, predictions)), sample_weight=tf.shape(y)[0])
        return self.compute_metrics(x, y, predictions)
