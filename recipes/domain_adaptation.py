"""Domain adaptation recipe (`tl-keras adapt`): labelled source reviews, unlabelled target ones.

By default MiniLM-L6 is fine-tuned (`partial:2`) on the source, scored on
the target (the source-only baseline), then self-trained on its own
confident predictions on the target texts and scored again. The target file
doubles as the labelled one: a stratified quarter of it (200 of 800) is the
test and never enters the unlabelled texts. `--method dann|coral` fine-tunes
with the same strategy on the source and the target texts at once (with
`--strategy frozen`, an adapter over cached features); `--target-labelled
FILE --method joint|source_then_target` uses a few labelled target texts.

Self-training is the default because it won on the 12 pairs of Amazon
product categories (`benchmarks/amazon_domains.py`): +2.4 points over
source-only on average over three seeds, fine-tuned, and no pair below it.
On one such pair (1,600 labelled source reviews, 1,200 unlabelled target
ones, `--sequence-length 256`) a default run takes about 9 minutes on 2 CPU
cores: 4-7 for the source fine-tune, about 3 for self-training. The
bundled default below takes about 2.
Without target labels (`--target-validation ""`) the run reports the share
of target predictions that self-training changed from the source-only
model's.

    python recipes/domain_adaptation.py
    python recipes/domain_adaptation.py --method dann \
        --source data/sentiment_labelled_sentences/amazon_cells_labelled.txt \
        --target data/sentiment_labelled_sentences/imdb_labelled.txt \
        --target-validation data/sentiment_labelled_sentences/imdb_labelled.txt
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
