"""Model fusion recipe (`tl-keras fuse`): fine-tune several models from one backbone with
different seeds, then fuse them: uniform soup, greedy soup, and ensemble.

    python recipes/model_fusion.py --ingredients 3 --strategy partial:2 \
        --export greedy --export-dir exports --model-name reviews_soup
"""

import pathlib
import sys

import tl_keras  # noqa: F401  (selects the TensorFlow backend first)
from tl_keras.cli.flags import main_with_error_line
from tl_keras.cli.workflows import run_recipe

DEFAULTS = {"train": str(pathlib.Path(__file__).resolve().parent.parent / "data" / "sentiment_labelled_sentences"
                       / "amazon_cells_labelled.txt")}


def main(argv=None):
    return run_recipe("fuse", argv, DEFAULTS, __doc__)


if __name__ == "__main__":
    sys.exit(main_with_error_line(main))
