"""Domain adaptation recipe: labelled source reviews, unlabelled target ones.

A frozen backbone's features feed a trainable adapter trained with DANN or
Deep CORAL; the source-only baseline runs with the same settings, and both
are reported on the labelled target validation file side by side.

    python recipes/domain_adaptation.py --method dann \
        --source data/sentiment_labelled_sentences/amazon_cells_labelled.txt \
        --target data/sentiment_labelled_sentences/yelp_labelled.txt \
        --target-validation data/sentiment_labelled_sentences/yelp_labelled.txt
"""

import json
import pathlib
import sys

import tl_keras  # noqa: F401  (selects the TensorFlow backend first)
from tl_keras.backbones import minilm_l6_offline_path
from tl_keras.domain_adaptation import DomainAdaptationConfig, run_domain_adaptation
from tl_keras.flags import build, main_with_error_line, parse_flags

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "sentiment_labelled_sentences"
DEFAULTS = {
    "source": str(DATA / "amazon_cells_labelled.txt"),
    "target": str(DATA / "yelp_labelled.txt"),
    "target_validation": str(DATA / "yelp_labelled.txt"),
    "output_dir": "runs/domain_adaptation",
    "sequence_length": 64,
}
HELP = {"method": "dann or coral (source_only runs the baseline alone)"}


def main(argv=None):
    settings = parse_flags(__doc__, [DomainAdaptationConfig], argv, DEFAULTS, HELP)
    settings["backbone"] = settings.get("backbone") or minilm_l6_offline_path()
    config = build(DomainAdaptationConfig, settings)
    _, metrics = run_domain_adaptation(config)
    for method, result in metrics.items():
        print(f"target {method:12s} accuracy {result['accuracy']:.4f}  macro F1 {result['macro_f1']:.4f}")
    print(json.dumps({m: r["accuracy"] for m, r in metrics.items()}))


if __name__ == "__main__":
    sys.exit(main_with_error_line(main))
