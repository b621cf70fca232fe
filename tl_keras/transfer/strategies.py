"""Transfer strategies: which weights train, and at what learning rate.

One small, explicit API: `parse_strategy("partial:2")` gives a
`TransferStrategy`, `apply_trainability(model, strategy)` sets what trains,
and `discriminative_optimizer(model, ...)` gives every trainable weight its
learning rate (head fastest, backbone blocks slower the deeper they are).
"""

import os
import tempfile
import warnings

import keras
import keras_hub

from tl_keras.models.backbones import (
    backbone_layer_groups,
    freeze_batch_norm,
    freeze_unused_pooler,
    unfreeze_top_blocks,
)
from tl_keras.core.choices import KINDS, TransferStrategy, parse_strategy  # noqa: F401  (the strategy API)
from tl_keras.models.heads import reads_sequence_output_only

def backbone_of(model):
    """Returns the KerasHub backbone inside an `EncoderHeadModel`'s `encoder`,
    however deep (a mirror-averaged image encoder holds it one model down)."""
    backbone = next((l for l in model.encoder._flatten_layers() if isinstance(l, keras_hub.models.Backbone)), None)
    if backbone is None:
        raise ValueError(f"The encoder of {model.name!r} holds no KerasHub backbone; received layers "
                         f"{[layer.name for layer in model.encoder.layers]}.")
    return backbone


def apply_trainability(model, strategy):
    """Sets which weights of `model` train under `strategy`.

    The head always trains. `frozen` freezes the whole backbone, `partial:N`
    leaves its top N blocks trainable, `full` unfreezes it, and `lora:R`
    freezes it and adds rank-R LoRA weights to the attention projections.
    A pooler the head does not use stays frozen, and BatchNormalization
    layers stay frozen, so in inference mode (`freeze_batch_norm`).
    """
    backbone = backbone_of(model)
    model.head.trainable = True
    model.encoder.trainable = True
    if strategy.kind == "frozen":
        backbone.trainable = False
    elif strategy.kind == "partial":
        unfreeze_top_blocks(backbone, strategy.value)
    elif strategy.kind == "full":
        backbone.trainable = True
    else:
        backbone.enable_lora(rank=strategy.value)
    if reads_sequence_output_only(model.encoder):
        freeze_unused_pooler(backbone)
    freeze_batch_norm(backbone)


@keras.saving.register_keras_serializable(package="tl_keras")
class DiscriminativeAdamW(keras.optimizers.AdamW):
    """AdamW with a learning-rate multiplier a variable.

    Keras 3 has no `MultiOptimizer`; this is its equivalent for discriminative
    fine-tuning: every update uses `learning_rate * multiplier`, where
    `multipliers` maps a variable's `path` to its factor (1.0 if absent).

    Args:
        multipliers: dict of variable path to learning-rate factor.
        **kwargs: passed to `keras.optimizers.AdamW`.

    Example:
    >>> optimizer = DiscriminativeAdamW(
    ...     {"text_model/encoder/bert_backbone/token_embedding/embeddings": 0.1},
    ...     learning_rate=1e-3)
    """

    def __init__(self, multipliers=None, **kwargs):
        super().__init__(**kwargs)
        self.multipliers = dict(multipliers or {})
        self._factors = []

    def build(self, variables):
        super().build(variables)
        self._factors = [self.multipliers.get(v.path, 1.0) for v in variables]

    def update_step(self, gradient, variable, learning_rate):
        factor = self._factors[self._get_variable_index(variable)]
        super().update_step(gradient, variable, learning_rate * factor)

    def get_config(self):
        return {**super().get_config(), "multipliers": self.multipliers}


def learning_rate_multipliers(model, backbone_ratio, layer_decay):
    """Maps every backbone variable's path to its learning-rate factor.

    The head gets 1.0 (absent from the map). The layers above the last
    transformer block get `backbone_ratio`, each block below that another
    factor of `layer_decay`, and the embeddings the smallest.
    """
    groups = backbone_layer_groups(backbone_of(model))
    multipliers = {}
    for depth, group in enumerate(reversed(groups)):
        for layer in group:
            for variable in layer.weights:
                multipliers[variable.path] = backbone_ratio * layer_decay**depth
    return multipliers


def discriminative_optimizer(model, head_learning_rate, backbone_learning_rate, layer_decay=1.0, weight_decay=0.01):
    """Returns a `DiscriminativeAdamW` for `model`: the head at
    `head_learning_rate`, the top of the backbone at `backbone_learning_rate`,
    and each lower block `layer_decay` times slower.

    Example:
    >>> model.compile(discriminative_optimizer(model, 1e-3, 5e-5, 0.8), loss)
    """
    for name, value in (("head_learning_rate", head_learning_rate), ("backbone_learning_rate", backbone_learning_rate)):
        if not value > 0:
            raise ValueError(f"`{name}` must be > 0, received {value!r}.")
    if not 0 < layer_decay <= 1:
        raise ValueError(f"`layer_decay` must be in (0, 1], received {layer_decay!r}.")
    multipliers = learning_rate_multipliers(
        model, backbone_learning_rate / head_learning_rate, layer_decay
    )
    return DiscriminativeAdamW(
        multipliers, learning_rate=head_learning_rate, weight_decay=weight_decay
    )


def merge_lora(model):
    """Returns a copy of `model` with its LoRA factors merged into the kernels
    (kernel + alpha/rank * A @ B) and no LoRA weights left, ready for export.
    A model without LoRA is returned unchanged.

    Keras saves a LoRA layer's kernel already merged, so a weights file
    written by the LoRA model loads into a fresh copy built without LoRA.
    """
    if not any(getattr(l, "lora_enabled", False) for l in model._flatten_layers()):
        return model
    merged = keras.models.clone_model(model)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        # The copy has no optimizer; the training optimizer's state is not needed.
        warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
        path = os.path.join(folder, "merged.weights.h5")
        model.save_weights(path)
        merged.load_weights(path)
    return merged
