"""Text transfer recipe: pretrained KerasHub backbone + trainable head.

With no flags it trains on the bundled product reviews with the offline
MiniLM-L6 backbone and exports a TF Serving SavedModel. Flags override a
`--config file.yaml`, which overrides the defaults.

    python recipes/text_classification.py --strategy partial:2 --epochs 3 \
        --export-dir exports --model-name reviews
"""

import argparse
import dataclasses
import pathlib
import sys

import yaml

import tl_keras  # noqa: F401  (selects the TensorFlow backend first)
from tl_keras.backbones import minilm_l6_offline_path
from tl_keras.text_classification import TextClassificationConfig, describe, run
from tl_keras.training import TrainingConfig

REPO = pathlib.Path(__file__).resolve().parent.parent
BUNDLED_REVIEWS = REPO / "data" / "sentiment_labelled_sentences" / "amazon_cells_labelled.txt"
RUN_FIELDS = {f.name: f for f in dataclasses.fields(TextClassificationConfig) if f.name != "training"}
TRAINING_FIELDS = {f.name: f for f in dataclasses.fields(TrainingConfig)}
DEFAULTS = {
    "train": str(BUNDLED_REVIEWS),
    "backbone": None,  # The offline MiniLM-L6, found at run time.
    "output_dir": "runs/text_classification",
    "strategy": "partial:2",
    "sequence_length": 64,
    "epochs": 3,
    "export_dir": "exports",
    "model_name": "reviews",
}
HELP = {
    "strategy": "frozen, partial:N, full or lora:R",
    "backbone": "KerasHub preset: Kaggle handle, preset folder or Hugging Face folder",
    "task": "classification, multilabel or regression",
}


def boolean(text):
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, received {text!r}")
    return text.lower() in ("true", "1", "yes")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of settings; flags override it")
    for name, field in {**RUN_FIELDS, **TRAINING_FIELDS}.items():
        kind = boolean if field.type is bool else field.type if field.type in (int, float) else str
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=HELP.get(name))
    return parser.parse_args(argv)


def resolve_settings(args):
    settings = dict(DEFAULTS)
    if args.config:
        loaded = yaml.safe_load(pathlib.Path(args.config).read_text()) or {}
        unknown = sorted(set(loaded) - set(RUN_FIELDS) - set(TRAINING_FIELDS))
        if unknown:
            raise SystemExit(f"{args.config}: unknown settings {unknown}")
        settings.update(loaded)
    settings.update({k: v for k, v in vars(args).items() if v is not None and k != "config"})
    if not settings.get("backbone"):
        settings["backbone"] = minilm_l6_offline_path()
    training = TrainingConfig(**{k: v for k, v in settings.items() if k in TRAINING_FIELDS})
    return TextClassificationConfig(training=training, **{k: v for k, v in settings.items() if k in RUN_FIELDS})


def main(argv=None):
    config = resolve_settings(parse_args(argv))
    print(f"backbone: {config.backbone}\nstrategy: {config.strategy}  train: {config.train}")
    print(describe(run(config)))


if __name__ == "__main__":
    sys.exit(main())
