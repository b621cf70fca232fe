"""Extractive question answering on SQuAD v1.1 articles: MiniLM-L6
fine-tuned on the training articles beside the lexical baseline (the context
sentence sharing the most words with the question, or its best span), on
test articles that share nothing with training; the question answering
recipe's defaults, with the time of each part.

The bundled file holds 12 SQuAD v1.1 articles (data/squad/SOURCE.md); the
split is by article: 9 for training, 1 for validation (the epoch kept is
the one with the best validation F1; the baseline's variant is chosen there
too), 2 for the test, scored once.

    .venv/bin/python benchmarks/squad.py
"""

import argparse
import json
import tempfile
import time

import common  # noqa: F401  (quiet TensorFlow, TensorFlow backend)
from tl_keras.core.settings import build_config
from tl_keras.core.offline import minilm_l6_offline_path
from tl_keras.training.config import TrainingConfig
from tl_keras.workflows.configs import QuestionAnsweringConfig
from tl_keras.workflows.question_answering import run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/squad/squad_v1.1_12_articles.json")
    parser.add_argument("--settings", default="{}", help="JSON of QuestionAnsweringConfig fields to change")
    parser.add_argument("--training", default="{}", help="JSON of TrainingConfig fields to change")
    args = parser.parse_args()
    settings, training = json.loads(args.settings), json.loads(args.training)
    defaults = build_config(QuestionAnsweringConfig, train=args.data, backbone="", output_dir="").training
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        result = run(build_config(QuestionAnsweringConfig, 
            train=args.data, backbone=minilm_l6_offline_path(), output_dir=f"{folder}/run", resume=False,
            validation_fraction=0.08, test_fraction=0.17,
            training=TrainingConfig(**{**vars(defaults), "verbose": 0, **training}), **settings))
        seconds = time.perf_counter() - start
    metrics, lexical = result.metrics, result.metrics["lexical"]
    print(f"\nSQuAD v1.1, {args.data}, split by article; settings {settings or 'the defaults'}, training "
          f"{training or 'the defaults'}; {seconds / 60:.1f} min for the whole run\n")
    print("| method | validation F1 | validation EM | test F1 | test EM |")
    print("|---|---|---|---|---|")
    rows = [("MiniLM-L6 reader", metrics)] + [(f"lexical {variant}", lexical[variant]) for variant in ("span", "sentence")]
    for name, figures in rows:
        print(f"| {name} | {figures['validation']['f1']:.1f} | {figures['validation']['exact_match']:.1f} | "
              f"{figures['test']['f1']:.1f} | {figures['test']['exact_match']:.1f} |")
    chosen = lexical[lexical["chosen"]]["test"]["f1"]
    print(f"\nvalidation F1 by epoch: {[round(f, 1) for f in result.history.get('val_f1', [])]}; "
          f"test F1 over the lexical baseline chosen on validation ({lexical['chosen']}): "
          f"{metrics['test']['f1'] - chosen:+.1f} points")


if __name__ == "__main__":
    main()
