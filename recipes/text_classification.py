"""Text transfer recipe: pretrained KerasHub backbone + trainable head.

With no flags it trains on the bundled product reviews with the offline
MiniLM-L6 backbone and exports a TF Serving SavedModel. Flags override a
`--config file.yaml`, which overrides the defaults.

    python recipes/text_classification.py --strategy partial:2 --epochs 3 \
        --export-dir exports --model-name reviews
"""

import pathlib
import sys

import tl_keras  # noqa: F401  (selects the TensorFlow backend first)
from tl_keras.backbones import minilm_l6_offline_path
from tl_keras.flags import build, main_with_error_line, parse_flags
from tl_keras.text_classification import TextClassificationConfig, describe, run
from tl_keras.training import TrainingConfig

REPO = pathlib.Path(__file__).resolve().parent.parent
BUNDLED_REVIEWS = REPO / "data" / "sentiment_labelled_sentences" / "amazon_cells_labelled.txt"
DEFAULTS = {
    "train": str(BUNDLED_REVIEWS),
    "output_dir": "runs/text_classification",
    "strategy": "partial:2",
    "sequence_length": 64,
    "epochs": 3,
    "export_dir": "exports",
    "model_name": "reviews",
}
HELP = {
    "strategy": "frozen, partial:N, full or lora:R",
    "backbone": "KerasHub preset: Kaggle handle, preset folder or Hugging Face folder (default: offline MiniLM-L6)",
    "task": "classification, multilabel or regression",
    "distribute": "auto, none, mirrored or multi_worker",
    "batch_size": "examples a replica takes a step",
}


def main(argv=None):
    settings = parse_flags(__doc__, [TextClassificationConfig, TrainingConfig], argv, DEFAULTS, HELP)
    settings["backbone"] = settings.get("backbone") or minilm_l6_offline_path()
    config = build(TextClassificationConfig, settings, training=build(TrainingConfig, settings))
    print(f"backbone: {config.backbone}\nstrategy: {config.strategy}  train: {config.train}")
    print(describe(run(config)))


if __name__ == "__main__":
    sys.exit(main_with_error_line(main))
