"""Two-tower recommendation recipe: a frozen pretrained text backbone embeds
every item from its text, so new items (cold start) are retrievable.

With no data flags it generates the synthetic shop (users who prefer topics,
new items that appear only in the test period) under `--output-dir`, trains
the text two-tower model beside an id-only two-tower and a popularity
ranking, prints the metrics table and exports a retrieval SavedModel.

    python recipes/recommendation.py --interactions clicks.csv \
        --items items.csv [--users users.csv] --export-dir exports
"""

import pathlib
import sys

import tl_keras  # noqa: F401  (selects the TensorFlow backend first)
from tl_keras.backbones import minilm_l6_offline_path
from tl_keras.flags import build, main_with_error_line, parse_flags
from tl_keras.recommendation import RecommendationConfig, describe, run
from tl_keras.synthetic_shop import make_synthetic_shop

DEFAULTS = {
    "output_dir": "runs/recommendation",
    "export_dir": "exports",
    "model_name": "shop_retrieval",
}
HELP = {
    "interactions": "user_id,item_id[,timestamp][,rating] CSV (default: generate the synthetic shop)",
    "items": "item_id,text CSV",
    "users": "optional user_id,<feature>,... CSV of categorical features",
    "backbone": "KerasHub text preset for the item tower (default: offline MiniLM-L6)",
    "ks": "recall/NDCG cut-offs, comma-separated",
    "distribute": "auto, none, mirrored or multi_worker",
}


def main(argv=None):
    settings = parse_flags(__doc__, [RecommendationConfig], argv, DEFAULTS, HELP)
    settings["backbone"] = settings.get("backbone") or minilm_l6_offline_path()
    if not settings.get("interactions"):
        if settings.get("items") or settings.get("users"):
            raise SystemExit("--items and --users need --interactions too.")
        folder = pathlib.Path(settings["output_dir"]) / "synthetic_shop"
        items, interactions, users = make_synthetic_shop(seed=settings.get("seed", 1234)).write(folder)
        settings.update(items=str(items), interactions=str(interactions), users=str(users))
        print(f"synthetic shop written to {folder}")
    elif not settings.get("items"):
        raise SystemExit("--interactions needs --items (item_id,text CSV).")
    config = build(RecommendationConfig, settings)
    print(f"backbone: {config.backbone}\ninteractions: {config.interactions}  items: {config.items}")
    print(describe(run(config)))


if __name__ == "__main__":
    sys.exit(main_with_error_line(main))
