"""Two-tower recommendation on the synthetic shop: the recipe's two-tower
model (MiniLM-L6 item text tower) beside its baselines, overall and on
test items unseen in training, averaged over shop seeds (each seed is a new
shop), with the ratio of each method to chance. Real data:
`benchmarks/movielens.py`.

    .venv/bin/python benchmarks/recommendation.py --seeds 3
"""

import argparse
import pathlib
import tempfile

import numpy as np

import common  # noqa: F401  (quiet TensorFlow, TensorFlow backend)
from tl_keras.core.settings import build_config
from tl_keras.models.backbones import minilm_l6_offline_path
from tl_keras.workflows.recommendation import RecommendationConfig, run
from tl_keras.data.synthetic_shop import make_synthetic_shop


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--user-id-embedding", choices=("true", "false"), default="true")
    args = parser.parse_args()
    runs, chance = [], []
    with tempfile.TemporaryDirectory() as folder:
        for seed in range(args.seeds):
            items, interactions, users = make_synthetic_shop(seed=seed).write(pathlib.Path(folder) / f"shop{seed}")
            result = run(build_config(RecommendationConfig, 
                interactions=str(interactions), items=str(items), users=str(users),
                backbone=minilm_l6_offline_path(), output_dir=f"{folder}/run{seed}", epochs=args.epochs,
                user_id_embedding=args.user_id_embedding == "true", seed=seed, verbose=0))
            runs.append({method: result.metrics[method] for method in result.metrics if method != "chance"})
            chance.append(result.metrics["chance"])
    columns = ["recall@10", "ndcg@10", "recall@50", "ndcg@50"]
    print(f"\nmean over {args.seeds} synthetic shops (std in brackets), user-id embedding {args.user_id_embedding}\n")
    print("| method | split | " + " | ".join(columns) + " | recall@50 / chance |")
    print("|---|---|" + "---|" * (len(columns) + 1))
    chance50 = np.mean([c["overall"]["recall@50"] for c in chance])
    for method in runs[0]:
        for split in ("overall", "cold_start"):
            values = {c: [r[method][split][c] for r in runs] for c in columns}
            cells = " | ".join(f"{np.mean(v):.3f} ({np.std(v):.3f})" for v in values.values())
            print(f"| {method} | {split} | {cells} | {np.mean(values['recall@50']) / chance50:.2f}x |")
    print(f"| chance | any | {np.mean([c['overall']['recall@10'] for c in chance]):.3f} | | {chance50:.3f} | | 1.00x |")


if __name__ == "__main__":
    main()
