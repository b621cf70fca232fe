"""Continued masked-LM pretraining's budget, measured downstream: MiniLM-L6
trained as a masked LM on a target domain's unlabelled pool for a grid of
epochs, learning rates and masking rates, then fine-tuned on the labelled
source domain (`partial:2`, 3 epochs, sequences of 64, as in
`benchmarks/transfer_between_domains.py`) and scored on the target's 200
held-out test sentences, which the masked LM never sees (the same pool/test
split). Zero epochs is plain source-only fine-tuning.

    .venv/bin/python benchmarks/continued_pretraining_budget.py --pairs "amazon>imdb" --seed 0
"""

import argparse
import json
import tempfile
import time

import common  # noqa: F401  (quiet TensorFlow, TensorFlow backend)
import keras
import numpy as np

from tl_keras import TextClassifier
from tl_keras.data.texts import read_labelled_texts
from tl_keras.models.backbones import minilm_l6_offline_path
from tl_keras.training.continued_pretraining import continue_pretraining
from transfer_between_domains import DOMAINS, EPOCHS, SETTINGS, pool_and_test

# (masked-LM epochs, learning rate, masking rate); 0 epochs is no pretraining.
GRID = "0,2:5e-5:0.15,2:2e-4:0.15,6:1e-4:0.15,6:1e-4:0.3"


def parse_grid(text):
    """`"0,2:5e-5:0.15"` as `[(0, None, None), (2, 5e-5, 0.15)]`."""
    points = []
    for point in text.split(","):
        parts = point.split(":")
        points.append((int(parts[0]), None, None) if parts == ["0"] else (int(parts[0]), float(parts[1]),
                                                                           float(parts[2])))
    return points


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", default="amazon>imdb", help="comma-separated source>target pairs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", default=GRID, help="epochs:learning_rate:mask_rate points, comma-separated")
    args = parser.parse_args()
    data = {name: read_labelled_texts(common.REVIEWS.parent / file) for name, file in DOMAINS.items()}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for pair in args.pairs.split(","):
            source, target = pair.split(">")
            texts, labels = list(data[target].texts), [str(label) for label in data[target].labels]
            pool, test = pool_and_test(labels, args.seed)
            test_labels = np.array([labels[i] for i in test])
            for epochs, rate, mask in parse_grid(args.grid):
                start = time.perf_counter()
                preset = minilm_l6_offline_path()
                if epochs:
                    preset, _ = continue_pretraining(
                        preset, [texts[i] for i in pool], f"{folder}/{target}-{epochs}-{rate}-{mask}",
                        sequence_length=64, epochs=epochs, learning_rate=rate, mask_rate=mask, seed=args.seed,
                        verbose=0)
                pretraining = time.perf_counter() - start
                keras.utils.set_random_seed(args.seed)
                model = TextClassifier.from_preset(str(preset), labels=["0", "1"], **SETTINGS)
                model.fit(list(data[source].texts), [str(l) for l in data[source].labels], epochs=EPOCHS,
                          seed=args.seed, verbose=0)
                accuracy = float(np.mean(np.array(model.predict_labels([texts[i] for i in test])) == test_labels))
                rows.append({"pair": f"{source} → {target}", "mlm_epochs": epochs, "learning_rate": rate,
                             "mask_rate": mask, "accuracy": accuracy, "mlm_seconds": round(pretraining, 1)})
                print(json.dumps(rows[-1]), flush=True)
    print(f"\nseed {args.seed}; accuracy on each target's 200 held-out test sentences after fine-tuning on the "
          "source\n")
    print("| pair | MLM epochs on the 600 target texts | learning rate | masking | accuracy | MLM seconds |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['pair']} | {row['mlm_epochs']} | {row['learning_rate'] or ''} | {row['mask_rate'] or ''} | "
              f"{row['accuracy']:.3f} | {row['mlm_seconds']} |")


if __name__ == "__main__":
    main()
