"""Extractive question answering recipe: a BERT-family backbone with a span
head, fine-tuned on SQuAD-format questions (`tl-keras train-qa` with the
bundled SQuAD v1.1 articles as the default data).

With no flags it splits the 12 bundled articles by article (training,
validation, test: no article in two), scores the lexical baseline, fine-tunes
the offline MiniLM-L6 (the epoch with the best validation F1 is kept),
reports validation and test exact match and F1 beside the baseline's, and
exports a TF Serving SavedModel taking `question` and `context` strings.
About 15 minutes on 2 CPU cores; `--max-train-questions 200 --epochs 1`
for a quick look.

    python recipes/question_answering.py --train my_shop_qa.json \\
        --export-dir exports --model-name product_qa
"""

import pathlib
import sys

import tl_keras  # noqa: F401  (selects the TensorFlow backend first)
from tl_keras.cli.flags import main_with_error_line
from tl_keras.cli.workflows import run_recipe

REPO = pathlib.Path(__file__).resolve().parent.parent
DEFAULTS = {
    "train": str(REPO / "data" / "squad" / "squad_v1.1_12_articles.json"),
    "validation_fraction": 0.08,
    "test_fraction": 0.17,
    "export_dir": "exports",
    "model_name": "squad",
}


def main(argv=None):
    return run_recipe("train-qa", argv, DEFAULTS, __doc__)


if __name__ == "__main__":
    sys.exit(main_with_error_line(main))
