"""Pooling, trainable heads, and the encoder-plus-head model every task is
(`EncoderHeadModel`: the typed contract the trainer, the strategies, the
feature cache and the explainer read)."""

import keras
from keras import ops

from tl_keras.core.choices import POOLINGS, TEST_TIME_AUGMENTATIONS


class SequencePooling(keras.layers.Layer):
    """Base of the poolings that read `sequence_output` (not a pooler)."""


@keras.saving.register_keras_serializable(package="tl_keras")
class MaskedMeanPooling(SequencePooling):
    """Averages `sequence_output` over the real (unpadded) tokens.

    Example:
    >>> pooled = MaskedMeanPooling()(sequence_output, padding_mask)
    """

    def call(self, sequence_output, padding_mask):
        mask = ops.cast(padding_mask, sequence_output.dtype)[:, :, None]
        total = ops.sum(sequence_output * mask, axis=1)
        count = ops.maximum(ops.sum(mask, axis=1), 1.0)
        return total / count

    def compute_output_shape(self, sequence_output_shape, padding_mask_shape):
        return (sequence_output_shape[0], sequence_output_shape[2])


@keras.saving.register_keras_serializable(package="tl_keras")
class FirstTokenPooling(SequencePooling):
    """Takes the first (`[CLS]`/`<s>`) token of `sequence_output`."""

    def call(self, sequence_output):
        return sequence_output[:, 0, :]

    def compute_output_shape(self, sequence_output_shape):
        return (sequence_output_shape[0], sequence_output_shape[2])


@keras.saving.register_keras_serializable(package="tl_keras")
class LastTokenPooling(SequencePooling):
    """Takes each text's last real token of `sequence_output` (inputs padded
    on the right): in a decoder, the one token that has read the whole
    text.

    Example:
    >>> pooled = LastTokenPooling()(sequence_output, padding_mask)
    """

    def call(self, sequence_output, padding_mask):
        last = ops.maximum(ops.sum(ops.cast(padding_mask, "int32"), axis=1) - 1, 0)
        return ops.take_along_axis(sequence_output, last[:, None, None], axis=1)[:, 0, :]

    def compute_output_shape(self, sequence_output_shape, padding_mask_shape):
        return (sequence_output_shape[0], sequence_output_shape[2])


def pool(backbone_outputs, padding_mask, pooling):
    """Pools backbone outputs to one vector a text.

    Args:
        backbone_outputs: the backbone's output, a dict with
            `sequence_output` (and `pooled_output` for BERT) or a tensor.
        padding_mask: the `padding_mask` input of the backbone.
        pooling: `"mean"`, `"cls"`, `"last"` (the last real token, for
            decoders) or `"pooled"`.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"`pooling` must be one of {POOLINGS}, received {pooling!r}.")
    if isinstance(backbone_outputs, dict):
        sequence_output = backbone_outputs["sequence_output"]
    else:
        sequence_output = backbone_outputs
    if pooling == "mean":
        return MaskedMeanPooling(name="mean_pooling")(sequence_output, padding_mask)
    if pooling == "cls":
        return FirstTokenPooling(name="cls_pooling")(sequence_output)
    if pooling == "last":
        return LastTokenPooling(name="last_pooling")(sequence_output, padding_mask)
    if not isinstance(backbone_outputs, dict) or "pooled_output" not in backbone_outputs:
        raise ValueError(
            "pooling='pooled' needs a backbone with a `pooled_output` (such as "
            "BERT); use 'mean' or 'cls' for this backbone."
        )
    return backbone_outputs["pooled_output"]


def build_head(feature_dim, num_outputs, task, hidden_dim=0, dropout=0.1):
    """Builds the trainable head: features in, predictions out.

    The head ends in the task's activation (softmax for classification,
    sigmoid for multi-label, none for regression) and always computes its
    output in float32, also under mixed precision.

    Args:
        feature_dim: the width of the pooled features.
        num_outputs: classes, or 1 for regression.
        task: `"classification"`, `"multilabel"` or `"regression"`.
        hidden_dim: width of an optional hidden layer; 0 for none.
        dropout: dropout rate before each dense layer.

    Example:
    >>> head = build_head(384, num_outputs=2, task="classification")
    """
    activations = {"classification": "softmax", "multilabel": "sigmoid", "regression": None}
    if task not in activations:
        raise ValueError(f"`task` must be one of {tuple(activations)}, received {task!r}.")
    if num_outputs < 1:
        raise ValueError(f"`num_outputs` must be >= 1, received {num_outputs!r}.")
    features = keras.Input(shape=(feature_dim,), name="features")
    x = features
    if hidden_dim:
        x = keras.layers.Dropout(dropout, name="head_dropout_hidden")(x)
        x = keras.layers.Dense(hidden_dim, activation="gelu", name="head_hidden")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(
        num_outputs, activation=activations[task], dtype="float32", name="head_output"
    )(x)
    return keras.Model(features, outputs, name="head")


def build_encoder(backbone, pooling):
    """Builds the encoder: the backbone's token inputs to one pooled vector a
    text, as a functional `keras.Model` named `"encoder"`.

    Example:
    >>> encoder = build_encoder(backbone, pooling="mean")
    """
    inputs = {
        name: keras.Input(shape=(None,), dtype="int32", name=name)
        for name in backbone.input
    }
    features = pool(backbone(inputs), inputs["padding_mask"], pooling)
    return keras.Model(inputs, features, name="encoder")


def reads_sequence_output_only(encoder):
    """True if the encoder pools `sequence_output` itself, so the backbone's
    own pooler (if any) does not reach the head."""
    return any(isinstance(layer, SequencePooling) for layer in encoder.layers)


def inputs_like(encoder, prefix=""):
    """Fresh `keras.Input`s shaped like the encoder's (a dict of token ids,
    or one image tensor), their names prefixed with `prefix`."""
    if isinstance(encoder.input, dict):
        return {name: keras.Input(shape=spec.shape[1:], dtype=spec.dtype, name=f"{prefix}{name}")
                for name, spec in encoder.input.items()}
    return keras.Input(shape=encoder.input.shape[1:], dtype=encoder.input.dtype, name=f"{prefix}images")


def head_loss_and_metrics(task):
    """`(loss, metrics)` for a head `build_head` made for `task` (it outputs
    probabilities; raw values for regression)."""
    if task == "classification":
        return keras.losses.SparseCategoricalCrossentropy(), [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
    if task == "multilabel":
        return keras.losses.BinaryCrossentropy(), [keras.metrics.BinaryAccuracy(name="accuracy")]
    if task == "regression":
        return keras.losses.MeanSquaredError(), [keras.metrics.MeanAbsoluteError(name="mae")]
    raise ValueError(f"`task` must be 'classification', 'multilabel' or 'regression', received {task!r}.")


class EncoderHeadModel(keras.Model):
    """`head(encoder(inputs))` as one functional Keras model: the contract
    between a task and the layers below it. The trainer, the strategies,
    the feature cache and the explainer read `encoder`, `head` and
    `loss_and_metrics()`, never layer names; a task overrides
    `loss_and_metrics` when its head is not a `build_head` head.

    `compile()` called by a user is kept (`compiled_by_user`): the trainer
    then uses that optimizer (and loss and metrics, where given) for the
    strategy's last phase instead of its own; `"auto"` keeps the default.

    Args:
        encoder: inputs to features (`build_encoder`, `build_image_encoder`,
            `build_sequence_encoder`).
        head: features to outputs (`build_head`, `build_span_head`).
        task: the head's kind for the default loss, as for `build_head`.

    Example:
    >>> model = EncoderHeadModel(build_encoder(backbone, "mean"), build_head(384, 2, "classification"))
    >>> model.encoder.output.shape, model.loss_and_metrics()[0]
    """

    def __init__(self, encoder, head, task="classification", **kwargs):
        inputs = inputs_like(encoder)
        super().__init__(inputs, head(encoder(inputs)), **kwargs)
        self.encoder, self.head, self.head_task = encoder, head, task
        self.compiled_by_user = {}
        self.privacy = None  # What the last private `fit` spent (`tl_keras.training.privacy.plan`).

    def loss_and_metrics(self):
        """The task's default `(loss, metrics)`."""
        return head_loss_and_metrics(self.head_task)

    def compile(self, optimizer="auto", loss="auto", metrics="auto", **kwargs):
        """Keras' `compile`, with the task's loss and metrics and AdamW(1e-3)
        for `"auto"` (no metrics for `"auto"` beside a loss of the user's);
        what is given here is what `fit` trains with."""
        def given(value):
            return not (isinstance(value, str) and value == "auto")

        user = {}
        if given(optimizer):
            user["optimizer"] = optimizer
        if given(loss):  # The task's metrics need not fit another loss's targets.
            user["loss"], user["metrics"] = loss, metrics if given(metrics) else []
        elif given(metrics):
            user["metrics"] = metrics
        self.compiled_by_user = user
        default_loss, default_metrics = self.loss_and_metrics()
        super().compile(optimizer=user.get("optimizer", keras.optimizers.AdamW(1e-3)),
                        loss=user.get("loss", default_loss), metrics=user.get("metrics", default_metrics), **kwargs)


def build_text_model(encoder, head, task="classification"):
    """Chains encoder and head into one `EncoderHeadModel` taking the
    backbone's token inputs (`token_ids`, `padding_mask`, and `segment_ids`
    where the family has them), as produced by the backbone's preprocessor,
    so it trains with plain `model.fit` on a `tf.data.Dataset` of
    `(token_dict, target)`.

    Example:
    >>> model = build_text_model(build_encoder(backbone, "mean"),
    ...                          build_head(384, 2, "classification"))
    """
    return EncoderHeadModel(encoder, head, task, name="text_model")


@keras.saving.register_keras_serializable(package="tl_keras")
class MirrorAveraged(keras.layers.Layer):
    """Test-time augmentation: in inference, the mean of `encoder`'s
    features of the images and of their mirror images; in training,
    `encoder`'s features of the images alone.

    Args:
        encoder: the image encoder (pixels to pooled features).

    Example:
    >>> features = MirrorAveraged(encoder)(images)
    """

    def __init__(self, encoder, **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder

    def call(self, images, training=None):
        features = self.encoder(images, training=training)
        if training:
            return features
        return 0.5 * (features + self.encoder(ops.flip(images, axis=2), training=training))

    def get_config(self):
        return {**super().get_config(), "encoder": keras.saving.serialize_keras_object(self.encoder)}

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "encoder": keras.saving.deserialize_keras_object(config["encoder"])})


def build_image_encoder(backbone, image_size, scale=None, offset=None, test_time_augmentation="none"):
    """Builds the image encoder: float32 pixels (0-255) `[h, w, 3]` to one
    pooled vector an image, as a functional `keras.Model` named `"encoder"`.
    `scale` and `offset` (the preset image converter's, per channel) map
    pixels to the backbone's input range. Feature maps (CNNs) are averaged
    over space, token sequences (ViT) over tokens. With
    `test_time_augmentation="flip"`, inference averages the features of each
    image and its mirror image (`MirrorAveraged`; twice the backbone's cost);
    training batches see the images alone, while features cached for the
    frozen head (computed in inference) are averaged too.

    Example:
    >>> encoder = build_image_encoder(backbone, (224, 224), 1 / 255.0, test_time_augmentation="flip")
    """
    if test_time_augmentation not in TEST_TIME_AUGMENTATIONS:
        raise ValueError(f"`test_time_augmentation` must be one of {TEST_TIME_AUGMENTATIONS}, received "
                         f"{test_time_augmentation!r}.")
    inputs = keras.Input(shape=(*image_size, 3), dtype="float32", name="images")
    pixels = inputs
    if scale is not None or offset is not None:
        pixels = keras.layers.Rescaling(1.0 if scale is None else scale, 0.0 if offset is None else offset,
                                        name="pixel_scaling")(pixels)
    outputs = backbone(pixels)
    if len(outputs.shape) == 4:
        features = keras.layers.GlobalAveragePooling2D(name="average_pooling")(outputs)
    else:
        features = keras.layers.GlobalAveragePooling1D(name="average_pooling")(outputs)
    if test_time_augmentation == "none":
        return keras.Model(inputs, features, name="encoder")
    single = keras.Model(inputs, features, name="single_view_encoder")
    images = keras.Input(shape=(*image_size, 3), dtype="float32", name="images")
    return keras.Model(images, MirrorAveraged(single, name="mirror_averaged")(images), name="encoder")


def build_image_model(encoder, head):
    """Chains an image encoder and a classification head into one
    `EncoderHeadModel` taking float32 pixels (0-255).

    Example:
    >>> model = build_image_model(build_image_encoder(backbone, (224, 224)),
    ...                           build_head(1280, 5, "classification"))
    """
    return EncoderHeadModel(encoder, head, "classification", name="image_model")


@keras.saving.register_keras_serializable(package="tl_keras")
class SequenceOutput(SequencePooling):
    """Passes on the backbone's `sequence_output` (a vector a token), for
    heads that predict per token (extractive question answering)."""

    def call(self, sequence_output):
        return sequence_output

    def compute_output_shape(self, sequence_output_shape):
        return sequence_output_shape


def build_sequence_encoder(backbone):
    """The backbone's token inputs to its `sequence_output` (`[B, L, D]`),
    as a functional `keras.Model` named `"encoder"`.

    Example:
    >>> encoder = build_sequence_encoder(backbone)
    """
    inputs = {name: keras.Input(shape=(None,), dtype="int32", name=name) for name in backbone.input}
    outputs = backbone(inputs)
    sequence_output = outputs["sequence_output"] if isinstance(outputs, dict) else outputs
    return keras.Model(inputs, SequenceOutput(name="sequence_output")(sequence_output), name="encoder")


def build_span_head(feature_dim, dropout=0.1):
    """The span head: a vector a token in, a start and an end logit a token
    out (`[B, L, 2]`, float32), named `"head"`.

    Example:
    >>> head = build_span_head(384)
    """
    features = keras.Input(shape=(None, feature_dim), name="features")
    x = keras.layers.Dropout(dropout, name="head_dropout")(features)
    logits = keras.layers.Dense(2, dtype="float32", name="span_logits")(x)
    return keras.Model(features, logits, name="head")
