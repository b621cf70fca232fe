"""Two-tower recommendation recipe (`tl-keras recommend`): a frozen
pretrained text backbone embeds every item from its text, so new items (cold
start) are retrievable.

With no data flags it generates the synthetic shop (users who prefer topics,
new items that appear only in the test period) under `--output-dir`, trains
the hybrid two-tower model beside its baselines (popularity, item-kNN, EASE,
text similarity, an id-only two-tower), epochs and λ chosen on a validation
slice, prints the metrics table (test split, new items, new users) and
exports a retrieval SavedModel.

    python recipes/recommendation.py --movielens path/to/ml-100k
    python recipes/recommendation.py --interactions clicks.csv \
        --items items.csv [--users users.csv] --export-dir exports
"""

import sys

import tl_keras  # noqa: F401  (selects the TensorFlow backend first)
from tl_keras.cli.flags import main_with_error_line
from tl_keras.cli.workflows import run_recipe

DEFAULTS = {"export_dir": "exports"}


def main(argv=None):
    return run_recipe("recommend", argv, DEFAULTS, __doc__)


if __name__ == "__main__":
    sys.exit(main_with_error_line(main))
