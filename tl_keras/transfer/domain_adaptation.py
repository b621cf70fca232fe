"""Unsupervised domain adaptation: DANN and CORAL, over frozen features or
through a fine-tuned backbone.

Over frozen features (`adapt`), the backbone's features are computed once
(the feature cache); a trainable adapter layer then learns features that
classify the labelled source domain and, at the same time, cannot tell
source from the unlabelled target domain. Through the backbone
(`build_adaptation_trainer` with `DomainPairs`), the classifier's own
encoder and head train on source batches paired with target batches, with
the same losses on the pooled encoder features and the weights the
classifier's strategy leaves trainable:

- DANN (Ganin et al. 2016): a domain classifier behind a gradient-reversal
  layer; the loss is L = L_task(source) + L_domain, and the reversal passes
  -λ times the domain gradient to the adapter, with λ ramped by
  2 / (1 + exp(-α p)) - 1 over training progress p.
- Deep CORAL (Sun & Saenko 2016): L = L_task(source) + w · ||C_s - C_t||² /
  (4 d²), aligning the feature covariances of the two domains.
- Source only: the same adapter and classifier, trained on the source alone
  with the same batches, as the baseline.

Over frozen features each returns a head (features → probabilities) that
`heads.build_text_model` puts behind the encoder; through the backbone the
classifier itself is adapted. Either way the model exports like any other.
"""

import math

import keras
from keras import ops
import numpy as np
import tensorflow as tf

from tl_keras.core.choices import FEATURE_ADAPTATION_METHODS
from tl_keras.models.heads import inputs_like


def dann_lambda(progress, alpha=10.0):
    """The DANN warm-start schedule 2 / (1 + exp(-α p)) - 1, for p in [0, 1].

    Example:
    >>> round(dann_lambda(0.0), 3), round(dann_lambda(1.0), 3)
    (0.0, 1.0)
    """
    return 2.0 / (1.0 + math.exp(-alpha * progress)) - 1.0


@tf.custom_gradient
def _reverse_gradient(x, scale):
    def gradient(upstream):
        return -scale * upstream, tf.zeros_like(scale)

    return tf.identity(x), gradient


@keras.saving.register_keras_serializable(package="tl_keras")
class GradientReversal(keras.layers.Layer):
    """Identity on the way forward; multiplies the gradient by `-scale` on the
    way back. `scale` (λ) is a non-trainable weight that `DannSchedule` sets.

    Example:
    >>> reversed_features = GradientReversal()(features)
    """

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(), initializer="zeros", trainable=False, name="scale")

    def call(self, inputs):
        return _reverse_gradient(inputs, ops.cast(self.scale, inputs.dtype))


class DannSchedule(keras.callbacks.Callback):
    """Sets the gradient reversal's λ before every batch from the progress
    through all `epochs * steps_per_epoch` batches."""

    def __init__(self, reversal, epochs, steps_per_epoch, alpha=10.0):
        super().__init__()
        self.reversal = reversal
        self.total = epochs * steps_per_epoch
        self.steps_per_epoch = steps_per_epoch
        self.alpha = alpha
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        progress = (self._epoch * self.steps_per_epoch + batch) / self.total
        self.reversal.scale.assign(dann_lambda(progress, self.alpha))


def coral_loss(source, target):
    """Deep CORAL: squared Frobenius distance of the two feature covariance
    matrices, divided by 4 d²."""
    def covariance(x):
        centred = x - ops.mean(x, axis=0, keepdims=True)
        count = ops.cast(ops.shape(x)[0], x.dtype)
        return ops.matmul(ops.transpose(centred), centred) / ops.maximum(count - 1.0, 1.0)

    dimension = ops.cast(ops.shape(source)[-1], source.dtype)
    return ops.sum(ops.square(covariance(source) - covariance(target))) / (4.0 * dimension**2)


@keras.saving.register_keras_serializable(package="tl_keras")
class CoralPenalty(keras.layers.Layer):
    """Adds `weight * coral_loss(source, target)` to the model's losses and
    passes `source` through."""

    def __init__(self, weight=1.0, **kwargs):
        super().__init__(**kwargs)
        self.weight = weight

    def call(self, source, target):
        self.add_loss(self.weight * coral_loss(source, target))
        return source

    def get_config(self):
        return {**super().get_config(), "weight": self.weight}


def align_domains(source, target, method, weight=1.0, hidden_dim=128):
    """The one place DANN and CORAL join a training model, over frozen
    features and through the backbone alike: `source` passed through
    `CoralPenalty` or `DomainConfusion` (which add their loss on both
    domains' features), or unchanged for `"source_only"`.

    Returns:
        `(source, reversal)`: `reversal` is DANN's `GradientReversal` (its
        λ set by `DannSchedule`), `None` otherwise.
    """
    if method == "coral":
        return CoralPenalty(weight, name="coral")(source, target), None
    if method == "dann":
        confusion = DomainConfusion(hidden_dim, weight, name="domain_confusion")
        return confusion(source, target), confusion.reversal
    return source, None


def build_adaptation_models(feature_dim, num_classes, method, hidden_dim=128, adaptation_weight=1.0):
    """Builds `(trainer, head, reversal)` over frozen features.

    `trainer` takes `{"source": features, "target": features}` and outputs
    the source probabilities, with the adaptation loss of `method` on both
    domains' adapted features (`align_domains`); `head` maps features to
    probabilities with the same layers; `reversal` is DANN's
    `GradientReversal` layer (`None` otherwise).

    Example:
    >>> trainer, head, reversal = build_adaptation_models(384, 2, "dann")
    """
    if method not in FEATURE_ADAPTATION_METHODS:
        raise ValueError(f"`method` must be one of {FEATURE_ADAPTATION_METHODS}, received {method!r}.")
    adapter = keras.layers.Dense(hidden_dim, activation="gelu", name="adapter")
    classifier = keras.layers.Dense(num_classes, activation="softmax", dtype="float32", name="classifier")
    source = keras.Input(shape=(feature_dim,), name="source")
    target = keras.Input(shape=(feature_dim,), name="target")
    source_features, reversal = align_domains(adapter(source), adapter(target), method, adaptation_weight,
                                              hidden_dim)
    trainer = keras.Model({"source": source, "target": target}, classifier(source_features),
                          name=f"{method}_trainer")
    features = keras.Input(shape=(feature_dim,), name="features")
    head = keras.Model(features, classifier(adapter(features)), name="head")
    return trainer, head, reversal


def adapt(source_features, source_targets, target_features, num_classes, method, epochs=10, batch_size=32,
          learning_rate=1e-3, hidden_dim=128, alpha=10.0, adaptation_weight=1.0, seed=1234, verbose=0):
    """Trains an adapter and classifier on labelled source features and
    unlabelled target features with `method`; returns `(head, history)`.

    Every step takes `batch_size` source and `batch_size` target rows (the
    balanced batches DANN expects); an epoch is one pass over the source.
    `adaptation_weight` weighs CORAL's penalty or DANN's domain loss
    (reported as `domain_loss`).

    Example:
    >>> head, history = adapt(amazon_features, amazon_targets, yelp_features,
    ...                       num_classes=2, method="dann")
    """
    keras.utils.set_random_seed(seed)
    trainer, head, reversal = build_adaptation_models(
        source_features.shape[-1], num_classes, method, hidden_dim, adaptation_weight
    )
    batch_size = min(batch_size, len(source_features), len(target_features))
    steps = int(np.ceil(len(source_features) / batch_size))
    source = tf.data.Dataset.from_tensor_slices((source_features, source_targets))
    target = tf.data.Dataset.from_tensor_slices(target_features)
    pairs = tf.data.Dataset.zip(
        source.shuffle(len(source_features), seed=seed).repeat(),
        target.shuffle(len(target_features), seed=seed + 1).repeat(),
    ).batch(batch_size, drop_remainder=True)
    pairs = pairs.map(lambda labelled, unlabelled: ({"source": labelled[0], "target": unlabelled}, labelled[1]))
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=keras.losses.SparseCategoricalCrossentropy())
    callbacks = [DannSchedule(reversal, epochs, steps, alpha)] if reversal is not None else []
    history = trainer.fit(pairs.prefetch(tf.data.AUTOTUNE), epochs=epochs, steps_per_epoch=steps,
                          callbacks=callbacks, verbose=verbose, shuffle=False)  # The pairs are shuffled.
    return head, history.history


class DomainPairs:
    """Labelled source inputs paired batch by batch with unlabelled target
    inputs, for training with an adaptation loss.

    Args:
        source, target: `TokenizedTexts` or `ImageArray`s (anything with
            `dataset(...)`).

    Example:
    >>> pairs = DomainPairs(classifier.tokenize(amazon_texts), classifier.tokenize(yelp_texts))
    >>> trainer.fit(pairs.dataset(targets, batch_size=16, shuffle=True), epochs=3)
    """

    cacheable = False  # Each batch runs the backbone on both domains.

    def __init__(self, source, target):
        self.source, self.target = source, target

    def __len__(self):
        return len(self.source)

    def dataset(self, targets, batch_size=32, shuffle=True, seed=None, training=True):
        """`({"source": inputs, "target": inputs}, source targets)` batches:
        one pass over the source an epoch, the target shuffled and repeated
        alongside."""
        source = self.source.dataset(targets, batch_size, shuffle=shuffle, seed=seed, training=training)
        target = self.target.dataset(None, batch_size, shuffle=True, seed=None if seed is None else seed + 1,
                                     training=training).repeat()
        return tf.data.Dataset.zip(source, target).map(
            lambda labelled, unlabelled: ({"source": labelled[0], "target": unlabelled}, labelled[1]))


@keras.saving.register_keras_serializable(package="tl_keras")
class DomainConfusion(keras.layers.Layer):
    """DANN's domain loss as a layer: a domain classifier behind a gradient
    reversal tells source features (0) from target features (1); `weight`
    times its binary cross-entropy (the mean of the two domains') is added
    to the model's losses, and `source` passes through.

    Example:
    >>> source_features = DomainConfusion()(source_features, target_features)
    """

    def __init__(self, hidden_dim=128, weight=1.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_dim, self.weight = hidden_dim, weight
        self.reversal = GradientReversal(name="gradient_reversal")
        self.hidden = keras.layers.Dense(hidden_dim, activation="relu", name="domain_hidden")
        self.logit = keras.layers.Dense(1, dtype="float32", name="domain_logit")
        self.domain_loss = keras.metrics.Mean(name="domain_loss")  # In the history beside the task loss.

    def call(self, source, target):
        def loss(features, domain):
            logits = self.logit(self.hidden(self.reversal(features)))
            return ops.mean(keras.losses.binary_crossentropy(ops.full_like(logits, domain), logits, from_logits=True))

        domain_loss = 0.5 * (loss(source, 0.0) + loss(target, 1.0))
        self.domain_loss.update_state(domain_loss)
        self.add_loss(self.weight * domain_loss)
        return source

    def get_config(self):
        return {**super().get_config(), "hidden_dim": self.hidden_dim, "weight": self.weight}


def build_adaptation_trainer(model, method, weight=1.0, hidden_dim=128):
    """A training model around `model`'s own `encoder` and `head` (so
    training it adapts `model`): inputs `{"source": ...,
    "target": ...}` (see `DomainPairs`), output the head's predictions for
    the source; the CORAL penalty or DANN's domain loss on the two domains'
    encoder features is added to the losses.

    Args:
        model: an `EncoderHeadModel` (a classifier).
        method: `"coral"` or `"dann"`.
        weight: the adaptation loss's weight (CORAL's penalty or DANN's
            domain loss).
        hidden_dim: DANN's domain classifier width.

    Returns:
        `(trainer, reversal)`: `reversal` is DANN's `GradientReversal`
        (its λ set by `DannSchedule`), `None` for CORAL.

    Example:
    >>> trainer, reversal = build_adaptation_trainer(classifier, "coral", weight=10.0)
    """
    if method not in ("coral", "dann"):
        raise ValueError(f"`method` must be 'coral' or 'dann' to adapt through the backbone, received {method!r}.")
    encoder, head = model.encoder, model.head
    inputs = {"source": inputs_like(encoder, "source_"), "target": inputs_like(encoder, "target_")}
    source, reversal = align_domains(encoder(inputs["source"]), encoder(inputs["target"]), method, weight, hidden_dim)
    return keras.Model(inputs, head(source), name=f"{method}_trainer"), reversal
