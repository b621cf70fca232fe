"""Text transfer recipe: pretrained KerasHub backbone + trainable head
(`tl-keras train-text` with the bundled product reviews as the default data).

With no flags it trains on the bundled reviews with the offline MiniLM-L6
backbone, reports validation and test metrics, and exports a TF Serving
SavedModel. Flags override a `--config file.yaml`, which overrides the
defaults.

    python recipes/text_classification.py --strategy partial:2 --epochs 3 \
        --export-dir exports --model-name reviews
"""

import pathlib
import sys

import tl_keras  # noqa: F401  (selects the TensorFlow backend first)
from tl_keras.cli.flags import main_with_error_line
from tl_keras.cli.workflows import run_recipe

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULTS = {
    "train": str(REPO / "data" / "sentiment_labelled_sentences" / "amazon_cells_labelled.txt"),
    "epochs": 3,
    "export_dir": "exports",
    "model_name": "reviews",
}


def main(argv=None):
    return run_recipe("train-text", argv, DEFAULTS, __doc__)


if __name__ == "__main__":
    sys.exit(main_with_error_line(main))
