"""Model fusion recipe: fine-tune several models from one backbone with
different seeds, then fuse them: uniform soup, greedy soup, and ensemble.

    python recipes/model_fusion.py --ingredients 3 --strategy partial:2 \
        --export greedy --export-dir exports --model-name reviews_soup
"""

import json
import pathlib
import sys

import tl_keras  # noqa: F401  (selects the TensorFlow backend first)
from tl_keras.backbones import minilm_l6_offline_path
from tl_keras.flags import build, main_with_error_line, parse_flags
from tl_keras.fusion import ModelFusionConfig, run_model_fusion

DEFAULTS = {
    "train": str(pathlib.Path(__file__).resolve().parent.parent / "data" / "sentiment_labelled_sentences"
                 / "amazon_cells_labelled.txt"),
    "output_dir": "runs/model_fusion",
}
HELP = {"export": "uniform, greedy or ensemble"}


def main(argv=None):
    settings = parse_flags(__doc__, [ModelFusionConfig], argv, DEFAULTS, HELP)
    settings["backbone"] = settings.get("backbone") or minilm_l6_offline_path()
    _, metrics = run_model_fusion(build(ModelFusionConfig, settings))
    for name, result in metrics.items():
        print(f"{name:14s} validation {result['validation_accuracy']:.4f}  held-out {result['test_accuracy']:.4f}"
              f"  parameters {result['parameters']:,}")
    print(json.dumps({name: result["test_accuracy"] for name, result in metrics.items()}))


if __name__ == "__main__":
    sys.exit(main_with_error_line(main))
