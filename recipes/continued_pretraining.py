"""Continued pretraining recipe (`tl-keras pretrain`): masked-LM training of a backbone on
unlabelled in-domain text, saved as a preset folder for `--backbone`.

    python recipes/continued_pretraining.py \
        --texts data/sentiment_labelled_sentences/yelp_labelled.txt \
        --output-preset presets/minilm_yelp --epochs 2
"""

import sys

import tl_keras  # noqa: F401  (selects the TensorFlow backend first)
from tl_keras.cli.flags import main_with_error_line
from tl_keras.cli.workflows import run_recipe

DEFAULTS = {}


def main(argv=None):
    return run_recipe("pretrain", argv, DEFAULTS, __doc__)


if __name__ == "__main__":
    sys.exit(main_with_error_line(main))
