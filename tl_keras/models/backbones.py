"""Loading pretrained KerasHub text backbones and freezing them by structure.

A preset is anything `keras_hub` accepts: a Kaggle handle such as
`"bert_base_en_uncased"`, a local KerasHub preset folder, or a local Hugging
Face checkpoint folder (`config.json`, `model.safetensors`, `vocab.txt`, ...)
that KerasHub converts on load. BERT, DistilBERT, RoBERTa, DeBERTa-v3 and the
other KerasHub encoder families load through the same two calls.
"""

import json
import pathlib

import keras
import keras_hub

from tl_keras.core.offline import minilm_l6_offline_path  # noqa: F401  (a backbone preset, named here too)
from tl_keras.models.decoders import classifier_parts, is_decoder
from tl_keras.models.gguf import gguf_preset



def load_text_backbone(preset, sequence_length=128, dtype=None):
    """Loads a text backbone and its matching classifier preprocessor.

    Args:
        dtype: the backbone's dtype policy (`"float16"` stores and computes
            in half precision), or `None` for the default.
        preset: a KerasHub preset: Kaggle handle, local preset folder, local
            Hugging Face checkpoint folder, or a Llama-architecture `.gguf`
            file (converted once, see `gguf.gguf_preset`).
        sequence_length: the length the preprocessor packs token ids to.

    Returns:
        `(backbone, preprocessor)`: a `keras_hub.models.Backbone` and a
        `keras_hub.models.TextClassifierPreprocessor` whose outputs are the
        backbone's inputs.

    Example:
    >>> backbone, preprocessor = load_text_backbone(
    ...     minilm_l6_offline_path(), sequence_length=64)
    >>> backbone(preprocessor(["great phone"]))["sequence_output"].shape
    TensorShape([1, 64, 384])
    """
    if not isinstance(sequence_length, int) or sequence_length < 2:
        raise ValueError(
            "`sequence_length` must be an integer >= 2, received "
            f"{sequence_length!r}."
        )
    preset = str(gguf_preset(preset))
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset, **({"dtype": dtype} if dtype else {}))
        if is_decoder(backbone):
            backbone, preprocessor = classifier_parts(preset, backbone, sequence_length)
        else:
            preprocessor = keras_hub.models.TextClassifierPreprocessor.from_preset(
                preset, sequence_length=sequence_length
            )
    except (ValueError, FileNotFoundError, OSError) as error:
        raise ValueError(
            f"Could not load backbone preset {preset!r}: {error}"
        ) from error
    limit = getattr(backbone, "max_sequence_length", None)
    if limit and sequence_length > limit:
        raise ValueError(
            f"`sequence_length` {sequence_length} exceeds the backbone's "
            f"maximum of {limit} positions ({preset}); use at most {limit}."
        )
    return backbone, preprocessor


def load_image_backbone(preset, with_converter=False):
    """Loads an image backbone and its preset's pixel scale and offset.

    Returns:
        `(backbone, scale, offset)`; scale and offset are `None` when the
        preset has no image converter. With `with_converter`,
        `(backbone, converter)`: the KerasHub `ImageConverter` or `None`.

    Example:
    >>> backbone, scale, offset = load_image_backbone("presets/efficientnet_lite0")
    """
    preset = str(preset)
    try:
        backbone = keras_hub.models.Backbone.from_preset(preset)
    except (ValueError, FileNotFoundError, OSError) as error:
        raise ValueError(f"Could not load image backbone preset {preset!r}: {error}") from error
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(preset)
    except (ValueError, FileNotFoundError, OSError):
        converter = None
    if with_converter:
        return backbone, converter
    return backbone, getattr(converter, "scale", None), getattr(converter, "offset", None)


def native_image_size(preset, default=224):
    """The side a preset's image converter resizes to (a converted
    EfficientNet-Lite's native resolution: 224, 240, 260, ...), or `default`
    for a preset without one.

    Example:
    >>> native_image_size("presets/efficientnet_lite1")
    240
    """
    try:
        size = keras_hub.layers.ImageConverter.from_preset(str(preset)).image_size
    except (ValueError, FileNotFoundError, OSError):
        return default
    return int(size[0] if isinstance(size, (tuple, list)) else size) if size else default


def default_pooling(preset, backbone):
    """Returns the pooling that suits `backbone`.

    Sentence-transformers checkpoints (a `1_Pooling/config.json` in the
    folder) were trained for their own pooling, usually the masked mean.
    A decoder (GPT-family) uses its last real token, the only one that has
    read the whole text. Otherwise a backbone with a trained pooler
    (`pooled_output`, as BERT) uses it, and the rest use the first
    (`[CLS]`) token.

    Example:
    >>> default_pooling(minilm_l6_offline_path(), backbone)
    'mean'
    """
    pooling_config = pathlib.Path(str(preset)) / "1_Pooling" / "config.json"
    if pooling_config.is_file():
        config = json.loads(pooling_config.read_text())
        if config.get("pooling_mode_mean_tokens"):
            return "mean"
        if config.get("pooling_mode_cls_token"):
            return "cls"
    if is_decoder(backbone):
        return "last"
    if isinstance(backbone.output, dict) and "pooled_output" in backbone.output:
        return "pooled"
    return "cls"


def transformer_blocks(backbone):
    """Returns the backbone's transformer blocks, bottom to top.

    Blocks are found by structure (the `transformer_layers` every KerasHub
    encoder keeps), never by matching layer names.
    """
    blocks = getattr(backbone, "transformer_layers", None)
    if not blocks:
        raise ValueError(
            f"Backbone {type(backbone).__name__} has no `transformer_layers`; "
            "partial unfreezing needs a transformer encoder."
        )
    return list(blocks)


def pyramid_stages(backbone):
    """Returns a convolutional backbone's stages, bottom to top: the layers
    between consecutive outputs of its feature pyramid (`pyramid_outputs`,
    which KerasHub's ResNet and EfficientNet record at each downsampling)."""
    outputs = list(backbone.pyramid_outputs)
    positions = {id(layer): i for i, layer in enumerate(backbone.layers)}
    ends = [positions[id(backbone.pyramid_outputs[level]._keras_history.operation)] for level in outputs]
    return [backbone.layers[start + 1:end + 1] for start, end in zip(ends, ends[1:])]


def backbone_blocks(backbone):
    """Returns the backbone's blocks, bottom to top, each a list of layers,
    found by structure, never by name: a transformer block each for text
    encoders (`transformer_layers`), a stage between feature-pyramid levels
    for ResNet and EfficientNet, and otherwise each top-level layer with
    weights (MobileNet's blocks; ViT's patch embedding and encoder)."""
    if getattr(backbone, "transformer_layers", None):
        return [[block] for block in backbone.transformer_layers]
    if len(getattr(backbone, "pyramid_outputs", None) or {}) >= 2:
        return pyramid_stages(backbone)
    blocks = [[layer] for layer in backbone.layers if layer.weights]
    if not blocks:
        raise ValueError(f"Backbone {type(backbone).__name__} has no layers with weights.")
    return blocks


def backbone_layer_groups(backbone):
    """Splits the backbone's layers into groups, bottom to top.

    Returns a list: the group below the first block (embeddings, a stem),
    then one group a block (see `backbone_blocks`), then the top group
    (everything above the last block, such as BERT's pooler). Each group is
    a list of the layers that have weights.
    """
    blocks = backbone_blocks(backbone)
    positions = {id(layer): i for i, layer in enumerate(backbone.layers)}
    first = positions[id(blocks[0][0])]
    last = positions[id(blocks[-1][-1])]
    layers = [layer for layer in backbone.layers if layer.weights]
    below = [l for l in layers if positions[id(l)] < first]
    above = [l for l in layers if positions[id(l)] > last]
    return [below] + [[l for l in block if l.weights] for block in blocks] + [above]


def freeze_batch_norm(backbone):
    """Freezes every BatchNormalization layer of the backbone. A frozen
    BatchNormalization layer runs in inference mode in Keras 3 (it keeps
    using and never updates its moving statistics), the rule for fine-tuning
    a pretrained network on little data."""
    for layer in backbone._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False


def freeze_unused_pooler(backbone):
    """Freezes the layers that do not feed `sequence_output` (such as BERT's
    pooler), for heads that pool the sequence themselves. Found from the
    backbone's graph, not by name."""
    outputs = backbone.output
    if not isinstance(outputs, dict) or "sequence_output" not in outputs:
        return
    used = keras.Model(backbone.input, outputs["sequence_output"]).layers
    used_ids = {id(layer) for layer in used}
    for layer in backbone.layers:
        if layer.weights and id(layer) not in used_ids:
            layer.trainable = False


def unfreeze_top_blocks(backbone, num_blocks):
    """Makes only the top `num_blocks` blocks (see `backbone_blocks`) and the
    layers above them (a pooler, a top convolution) trainable; embeddings or
    stem and lower blocks freeze.

    Example:
    >>> unfreeze_top_blocks(backbone, 2)
    """
    blocks = backbone_blocks(backbone)
    if not 0 <= num_blocks <= len(blocks):
        raise ValueError(
            f"`num_blocks` must be in [0, {len(blocks)}] for this backbone, "
            f"received {num_blocks!r}."
        )
    backbone.trainable = True
    groups = backbone_layer_groups(backbone)
    trainable_from = len(groups) - 1 - num_blocks
    for depth, group in enumerate(groups):
        for layer in group:
            layer.trainable = depth >= trainable_from
