"""The recommendation recipe's defaults on MovieLens-100k, beside its
baselines (popularity, item-kNN, EASE with λ chosen on validation, text
similarity, an id-only two-tower), over seeds; mean and std of each figure
and the time of each run.

MovieLens may not be redistributed, so the data is never in this
repository: pass the path of a local `ml-100k/` folder (GroupLens'
release; the public GitHub repository clasnake/recommender holds a copy
whose u.data and u.item match the release's sizes). It is converted to the
recipe's CSV files in a temporary folder.

    .venv/bin/python benchmarks/movielens.py /path/to/ml-100k --seeds 3
    .venv/bin/python benchmarks/movielens.py /path/to/ml-100k --seeds 1 --check-export

`--check-export` also exports the first seed's retrieval model and checks that
the SavedModel's top-10 (user id and the user's recent training items in) is
the in-process `Recommender.recommend`'s for every test user, in order.
`--check-index` (with it) then lists 200 movies again under new ids, embeds
their titles with `embed_catalogue` on Beam through that export, exports the
next version from the pipeline's index and checks its top-10 against the
in-process `Recommender.add_items` for 200 test users.

    .venv/bin/python benchmarks/movielens.py /path/to/ml-100k --seeds 1 --check-export --check-index
"""

import argparse
import json
import tempfile
import time

import numpy as np

import common  # noqa: F401  (quiet TensorFlow, TensorFlow backend)
from tl_keras.core.settings import build_config
from tl_keras.core.offline import minilm_l6_offline_path
from tl_keras.data.interactions import histories, read_interactions, read_items, read_users, time_ordered_split
from tl_keras.data.movielens import convert_movielens
from tl_keras.workflows.configs import RecommendationConfig
from tl_keras.workflows.recommendation import run

GROUPS = ("overall", "new_items", "new_users")
COLUMNS = ("recall@10", "ndcg@10", "recall@50", "ndcg@50")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="the ml-100k/ folder (u.data, u.item, u.user)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--settings", default="{}", help="JSON of RecommendationConfig fields to change")
    parser.add_argument("--check-index", action="store_true",
                        help="with --check-export: an export from a Beam-built item index against add_items")
    parser.add_argument("--check-export", action="store_true",
                        help="served top-10 against in-process recommendations for every test user (first seed)")
    args = parser.parse_args()
    if args.check_index and not args.check_export:
        parser.error("--check-index builds on --check-export's export; give both.")
    settings = json.loads(args.settings)
    runs, chances, seconds = [], [], []
    with tempfile.TemporaryDirectory() as folder:
        items, interactions, users = convert_movielens(args.folder, f"{folder}/data")
        for seed in range(args.seeds):
            start = time.perf_counter()
            export = dict(export_dir=f"{folder}/exports", top_k=10) if args.check_export and not seed else {}
            result = run(build_config(RecommendationConfig, 
                interactions=str(interactions), items=str(items), users=str(users),
                backbone=minilm_l6_offline_path(), output_dir=f"{folder}/run{seed}", seed=seed, verbose=0,
                **export, **settings))
            if export:
                check_export(result, items, interactions, users, settings.get("holdout", 2), args.check_index)
            seconds.append(time.perf_counter() - start)
            runs.append({m: f for m, f in result.metrics.items() if m != "chance"})
            chances.append(result.metrics["chance"])
            print(f"seed {seed}: {seconds[-1]:.0f} s, two_tower recall@10 "
                  f"{runs[-1]['two_tower']['overall']['recall@10']:.4f}, ease {runs[-1]['ease']['overall']['recall@10']:.4f}",
                  flush=True)
    print(f"\nMovieLens-100k, {args.seeds} seeds (mean, std in brackets), settings {settings or 'the defaults'}; "
          f"test split (validation only chose epochs and λ); {np.mean(seconds):.0f} s a run "
          f"(max {np.max(seconds):.0f} s)\n")
    print("| group | method | " + " | ".join(COLUMNS) + " | recall@10 / chance |")
    print("|---|---|" + "---|" * (len(COLUMNS) + 1))
    for group in GROUPS:
        chance10 = np.mean([c[group]["recall@10"] for c in chances])
        for method in runs[0]:
            if group not in runs[0][method]:
                continue
            values = {c: [r[method][group][c] for r in runs] for c in COLUMNS}
            cells = " | ".join(f"{np.mean(v):.4f} ({np.std(v):.4f})" for v in values.values())
            print(f"| {group} | {method} | {cells} | {np.mean(values['recall@10']) / chance10:.2f}x |")
        print(f"| {group} | chance | {chance10:.4f} | | {np.mean([c[group]['recall@50'] for c in chances]):.4f} | "
              "| 1.00x |")


def check_export(result, items, interactions, users, holdout, check_index=False):
    """Served top-10 against `Recommender.recommend` for every test user of
    the time split, with the user's last training items as recent items."""
    import tensorflow as tf

    catalog = read_items(items)
    interactions, known_users = read_interactions(interactions, catalog, read_users(users))
    split = time_ordered_split(interactions, holdout)
    recommender = result.task.recommender()
    test_users = np.unique(split.test.users)
    recent = histories(split.train, len(known_users), recommender.history_length)[test_users]
    names = np.array([""] + list(catalog.item_ids), dtype=object)
    recent_ids = [[names[n] for n in row if n] for row in recent]
    width = max(len(row) for row in recent_ids)
    recent_ids = [[""] * (width - len(row)) + row for row in recent_ids]
    user_ids = [known_users.user_ids[u - 1] for u in test_users]
    expected, _ = recommender.recommend(user_ids, recent_ids, k=10)
    serve = tf.saved_model.load(str(result.export_path)).signatures["serving_default"]
    served = np.concatenate([serve(user_id=tf.constant(user_ids[i:i + 256]),
                                   recent_item_ids=tf.constant(recent_ids[i:i + 256]))["item_ids"].numpy().astype(str)
                             for i in range(0, len(user_ids), 256)])
    same = [list(a) == list(b) for a, b in zip(served, expected)]
    print(f"export check: served top-10 equals Recommender.recommend, in order, for {sum(same)} of {len(same)} "
          f"test users (recent items: each user's last {recommender.history_length} training items)", flush=True)
    if check_index:
        check_pipeline_index(result, catalog, user_ids[:200], recent_ids[:200])


def check_pipeline_index(result, catalog, user_ids, recent_ids):
    """200 movies listed again under new ids, embedded on Beam into an item
    index; the export built from it against `Recommender.add_items`."""
    import pathlib

    import tensorflow as tf

    from tl_keras.export.retrieval import export_recommender
    from tl_keras.pipelines.catalogue_index import embed_catalogue

    model_dir = pathlib.Path(result.export_path).parent  # exports/<model name>/, whose next version is written
    folder = model_dir.parent
    new_ids = [f"relisted-{item_id}" for item_id in catalog.item_ids[:200]]
    titles = list(catalog.texts[:200])
    with open(folder / "new_items.jsonl", "w") as stream:
        stream.writelines(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(new_ids, titles))
    start = time.perf_counter()
    embedded = embed_catalogue(model_dir, str(folder / "new_items.jsonl"), folder / "index")
    seconds = time.perf_counter() - start
    expected, _ = result.task.add_items(new_ids, titles).recommend(user_ids, recent_ids, k=10)
    path = export_recommender(result.task.add_item_index(folder / "index"), str(folder), model_dir.name, k=10)
    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    served = serve(user_id=tf.constant(user_ids), recent_item_ids=tf.constant(recent_ids))["item_ids"].numpy().astype(str)
    same = [list(a) == list(b) for a, b in zip(served, expected)]
    relisted = sum(item.startswith("relisted-") for row in expected for item in row)
    print(f"index check: {embedded.predicted} items embedded on Beam in {seconds:.1f} s "
          f"({embedded.dead_letters} dead letters); export version {path.name} from the index: served top-10 equals "
          f"Recommender.add_items' in order for {sum(same)} of {len(same)} users ({relisted} of their "
          f"{10 * len(same)} slots hold a relisted movie)", flush=True)


if __name__ == "__main__":
    main()
