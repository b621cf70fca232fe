"""Continued pretraining: fine-tune on a target domain from the original
MiniLM-L6 and from MiniLM-L6 after masked-LM training on that domain's
(unlabelled) texts, with the same recipe and seed.

    .venv/bin/python benchmarks/continued_pretraining.py --domain yelp
"""

import argparse
import tempfile

from common import REVIEWS, Timer, write_rows
from tl_keras.core.settings import build_config
from tl_keras.models.backbones import minilm_l6_offline_path
from tl_keras.training.continued_pretraining import continue_pretraining
from tl_keras.data.texts import read_labelled_texts, stratified_split
from tl_keras.workflows.text_classification import TextClassificationConfig, run
from tl_keras.training.trainer import TrainingConfig

FILES = {"amazon": "amazon_cells_labelled.txt", "yelp": "yelp_labelled.txt", "imdb": "imdb_labelled.txt"}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--domain", default="yelp", choices=sorted(FILES))
    parser.add_argument("--mlm-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    rows = read_labelled_texts(REVIEWS.parent / FILES[args.domain])
    train, validation = stratified_split(rows, 0.2, seed=1234)
    with tempfile.TemporaryDirectory() as folder:
        files = dict(train=write_rows(folder, "train.tsv", train), validation=write_rows(folder, "val.tsv", validation))
        with Timer() as mlm_time:
            adapted, history = continue_pretraining(minilm_l6_offline_path(), rows.texts, f"{folder}/adapted",
                                                    sequence_length=64, epochs=args.mlm_epochs, verbose=0)
        results = {}
        for name, backbone in (("original", minilm_l6_offline_path()), ("adapted", str(adapted))):
            config = build_config(TextClassificationConfig, backbone=backbone, output_dir=f"{folder}/{name}", strategy="partial:2",
                                              sequence_length=64, pooling="mean", resume=False,
                                              training=TrainingConfig(epochs=args.epochs, verbose=0), **files)
            results[name] = run(config).metrics
    print(f"domain {args.domain}: masked-LM on its {len(rows)} texts, {args.mlm_epochs} epochs, "
          f"{mlm_time.seconds:.0f} s, loss {history['loss'][0]:.3f} -> {history['loss'][-1]:.3f}")
    for name, metrics in results.items():
        print(f"fine-tuned from {name:8s}: validation accuracy {metrics['accuracy']:.4f}, macro F1 {metrics['macro_f1']:.4f}")


if __name__ == "__main__":
    main()
