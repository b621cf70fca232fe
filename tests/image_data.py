"""A tiny EfficientNet built from config for the image tests (the images
are `tl_keras.sample_images`: crops of scikit-image's sample photographs).
Nothing is downloaded."""

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
