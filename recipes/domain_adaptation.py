"""Domain adaptation recipe (`tl-keras adapt`): labelled source reviews, unlabelled target ones.

A frozen backbone's features feed a trainable adapter trained with DANN or
Deep CORAL; the source-only baseline runs with the same settings, and both
are reported on the labelled target validation file side by side.

    python recipes/domain_adaptation.py --method dann \
        --source data/sentiment_labelled_sentences/amazon_cells_labelled.txt \
        --target data/sentiment_labelled_sentences/yelp_labelled.txt \
        --target-validation data/sentiment_labelled_sentences/yelp_labelled.txt
"""

import pathlib
import sys

import tl_keras  # noqa: F401  (selects the TensorFlow backend first)
from tl_keras.cli.flags import main_with_error_line
from tl_keras.cli.workflows import run_recipe

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "sentiment_labelled_sentences"
DEFAULTS = {
    "source": str(DATA / "amazon_cells_labelled.txt"),
    "target": str(DATA / "yelp_labelled.txt"),
    "target_validation": str(DATA / "yelp_labelled.txt"),
    "sequence_length": 64,
}


def main(argv=None):
    return run_recipe("adapt", argv, DEFAULTS, __doc__)


if __name__ == "__main__":
    sys.exit(main_with_error_line(main))
