"""The recommendation job end to end: catalogue and interactions in, a
metrics table and a retrieval SavedModel out.

Data flows one way: read → time-ordered split → frozen text embeddings of
every item (once, cached) → two towers → in-batch softmax training →
recall/NDCG overall and on cold-start items, beside an id-only two-tower and
a popularity ranking → export of the text model.
"""

import dataclasses
import pathlib

import keras
import numpy as np
import tensorflow as tf

from tl_keras.backbones import default_pooling, load_text_backbone
from tl_keras.distribute import WorkerOutput, global_batch_size, is_chief, pick_strategy
from tl_keras.evaluation import pyplot
from tl_keras.feature_cache import FeatureCache
from tl_keras.heads import build_encoder
from tl_keras.interactions import (
    histories, read_interactions, read_items, read_users, sequential_examples, time_ordered_split, user_runs,
)
from tl_keras.multi_worker import fit
from tl_keras.preprocessing import tokenize
from tl_keras.ranking import chance_recall, evaluate_ranking, popularity_scores
from tl_keras.recommender import Recommender
from tl_keras.retrieval import ItemTower, TwoTowerModel, UserTower, item_log_probabilities
from tl_keras.retrieval_export import export_recommender
from tl_keras.files import write_json
from tl_keras.ranges import check_settings
from tl_keras.runs import holding_run_folder

METHODS = ("text_two_tower", "id_two_tower", "popularity")


@dataclasses.dataclass
class RecommendationConfig:
    """Everything a recommendation run needs; `recipes/recommendation.py`
    fills it from flags or YAML.

    Args:
        interactions: `user_id,item_id[,timestamp][,rating]` CSV.
        items: `item_id,text` CSV.
        backbone: a KerasHub text preset for the item tower.
        output_dir: where `metrics.json`, the table and the plot go.
        users: optional `user_id,<feature>,...` CSV.
        holdout: each user's most recent interactions held out for testing.
        history_length: recent items the user tower pools.
        embedding_dim: the towers' output size.
        item_id_embedding: add a learned id vector to the text tower (items
            unseen in training fall back to text alone).
        user_id_embedding: learn a vector per user id.
        temperature: the initial softmax temperature (learned).
        remove_accidental_hits: mask duplicates of a positive among its
            in-batch negatives.
        logq_correction: subtract log sampling probability from the logits.
        ks: the cut-offs for recall and NDCG, comma-separated.
        export_dir, model_name, top_k: export the text model's retrieval
            SavedModel returning `top_k` items when `export_dir` is set.
        distribute: `"auto"`, `"none"`, `"mirrored"` or `"multi_worker"`.

    Example:
    >>> run(RecommendationConfig(interactions="clicks.csv", items="items.csv",
    ...     backbone=minilm_l6_offline_path(), output_dir="runs/shop"))
    """

    interactions: str
    items: str
    backbone: str
    output_dir: str
    users: str = None
    holdout: int = 2
    history_length: int = 10
    sequence_length: int = 32
    pooling: str = None
    embedding_dim: int = 64
    item_id_embedding: bool = False
    user_id_embedding: bool = True
    temperature: float = 0.1
    remove_accidental_hits: bool = True
    logq_correction: bool = False
    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 3e-3
    ks: str = "10,50"
    seed: int = 1234
    verbose: int = 1
    export_dir: str = None
    model_name: str = "retrieval"
    top_k: int = 10
    distribute: str = "auto"

    def __post_init__(self):
        check_settings(self)


@dataclasses.dataclass
class RecommendationResult:
    """The run's metrics per method, the text-tower `Recommender`, the
    report files and the export folder."""

    metrics: dict
    recommender: Recommender
    report_paths: list
    export_path: pathlib.Path = None


def item_text_features(catalog, backbone, sequence_length, pooling=None, cache_dir=None, verbose=1):
    """Embeds every item text once with the frozen backbone (mean or the
    backbone's default pooling), cached on disk when `cache_dir` is set.

    Returns:
        `(features [num_items, d], encoder, preprocessor)`.
    """
    backbone_model, preprocessor = load_text_backbone(backbone, sequence_length)
    encoder = build_encoder(backbone_model, pooling or default_pooling(backbone, backbone_model))
    encoder.trainable = False
    tokens = tokenize(catalog.texts, preprocessor, verbose=verbose)
    features = FeatureCache(cache_dir).features(encoder, tokens, verbose=verbose)
    return features, encoder, preprocessor


def build_two_tower(text_features, known_items, users, config, log_probabilities=None):
    """A compiled `TwoTowerModel` for `config`: text tower when
    `text_features` is given, id tower when `known_items` is given."""
    item_tower = ItemTower(text_features, known_items, config.embedding_dim, name="item_tower")
    sizes = [len(vocabulary) for vocabulary in users.feature_vocabularies]
    user_tower = UserTower(len(users), config.embedding_dim, users.features, sizes,
                           use_user_ids=config.user_id_embedding, name="user_tower")
    model = TwoTowerModel(item_tower, user_tower, config.temperature, config.remove_accidental_hits,
                          log_probabilities)
    # Built here, under the caller's strategy scope: Keras' own build from a
    # distributed batch would trace the towers with float inputs.
    model.build({"user": (None,), "history": (None, config.history_length), "item": (None,)})
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    return model


def train_two_tower(model, examples, config, distribution):
    """Fits `model` on the sequential `examples` (global batch) and returns
    the per-epoch losses."""
    batch = global_batch_size(config.batch_size, distribution)
    dataset = (tf.data.Dataset.from_tensor_slices(examples)
               .shuffle(len(examples["item"]), seed=config.seed, reshuffle_each_iteration=True)
               .batch(batch).prefetch(tf.data.AUTOTUNE))
    history = fit(model, distribution, dataset, epochs=config.epochs, verbose=config.verbose)
    return [float(loss) for loss in history.history["loss"]]


def _held_out(split, num_items):
    """The test users, their held-out items (a set each) and their training
    items as a bool `[users, num_items + 1]` to leave out of the ranking."""
    runs = user_runs(split.test.users)
    test_users = np.array([user for user, _, _ in runs], np.int32)
    relevant = [set(split.test.items[start:end].tolist()) for _, start, end in runs]
    trained = {user: split.train.items[start:end] for user, start, end in user_runs(split.train.users)}
    exclude = np.zeros((len(test_users), num_items + 1), bool)
    for row, user in enumerate(test_users):
        exclude[row, trained[user]] = True
    return test_users, relevant, exclude


def write_table(metrics, chance, path):
    """Writes the methods side by side as a Markdown table."""
    columns = [name for name in metrics[METHODS[0]]["overall"] if name != "users"]
    lines = ["| method | split | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for method in metrics:
        for split in ("overall", "cold_start"):
            figures = metrics[method][split]
            lines.append(f"| {method} | {split} | " + " | ".join(f"{figures[c]:.4f}" for c in columns) + " |")
    lines.append("| chance | any | " + " | ".join(
        f"{chance[c]:.4f}" if c in chance else "" for c in columns) + " |")
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_metrics(metrics, k, path, chance=None):
    """Bar chart of recall@k per method, overall and cold-start, with a
    random ranking's recall@k as a dashed line."""
    plt = pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    width = 0.38
    positions = np.arange(len(metrics))
    for offset, split in ((-width / 2, "overall"), (width / 2, "cold_start")):
        axis.bar(positions + offset, [metrics[m][split][f"recall@{k}"] for m in metrics], width, label=split)
    if chance is not None:
        axis.axhline(chance, color="grey", linestyle="--", label="chance")
    axis.set_xticks(positions, list(metrics))
    axis.set_ylabel(f"recall@{k}")
    axis.set_title("Held-out recall by method")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


@holding_run_folder
def run(config, distribution=None):
    """Trains the text two-tower model and the baselines, evaluates them on
    the time-ordered split and (optionally) exports the text model; see
    `RecommendationConfig`. Returns a `RecommendationResult`."""
    try:
        ks = tuple(int(k) for k in str(config.ks).split(","))
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise ValueError(f"`ks` must be comma-separated whole numbers >= 1, such as '10,50'; received {config.ks!r}.")
    catalog = read_items(config.items)
    users = read_users(config.users) if config.users else None
    interactions, users = read_interactions(config.interactions, catalog, users)
    split = time_ordered_split(interactions, config.holdout)
    if not len(split.test):
        raise ValueError(f"No user has more than holdout={config.holdout} interactions; nothing to evaluate.")
    output_dir = pathlib.Path(config.output_dir)
    distribution = distribution or pick_strategy(config.distribute)
    print(f"{len(catalog)} items, {len(users)} users, {len(split.train)} training and {len(split.test)} held-out "
          f"interactions, {len(split.cold_items)} cold-start items")

    examples = sequential_examples(split.train, config.history_length)
    known = np.zeros(len(catalog), bool)
    known[np.unique(split.train.items) - 1] = True
    log_probabilities = item_log_probabilities(split.train.items, len(catalog)) if config.logq_correction else None
    test_users, relevant, exclude = _held_out(split, len(catalog))
    train_histories = histories(split.train, len(users), config.history_length)

    keras.utils.set_random_seed(config.seed)
    with distribution.scope():
        features, encoder, preprocessor = item_text_features(
            catalog, config.backbone, config.sequence_length, config.pooling, output_dir / "feature_cache",
            config.verbose)
        models = {
            "text_two_tower": build_two_tower(features, known if config.item_id_embedding else None, users, config,
                                              log_probabilities),
            "id_two_tower": build_two_tower(None, known, users, config, log_probabilities),
        }
    metrics, losses, recommenders = {}, {}, {}
    for name, model in models.items():
        print(f"training {name}")
        losses[name] = train_two_tower(model, examples, config, distribution)
        text_model = name == "text_two_tower"
        recommenders[name] = Recommender(model, catalog, users, config.history_length,
                                         encoder if text_model else None, preprocessor if text_model else None)
        scores = recommenders[name].scores(test_users, train_histories[test_users])
        metrics[name] = evaluate_ranking(scores, relevant, exclude, split.cold_items, ks, config.seed)
    scores = popularity_scores(split.train.items, len(catalog), len(test_users))
    metrics["popularity"] = evaluate_ranking(scores, relevant, exclude, split.cold_items, ks, config.seed)
    chance = {f"recall@{k}": chance_recall(k, len(catalog), exclude.sum(axis=1)) for k in ks}

    with WorkerOutput(output_dir) as report_dir:
        report_dir = pathlib.Path(report_dir)  # A temporary folder (a str) on workers other than the chief.
        report = {"metrics": metrics, "chance": chance, "training_loss": losses,
                  "data": {"items": len(catalog), "users": len(users), "train": len(split.train),
                           "test": len(split.test), "cold_items": len(split.cold_items)}}
        write_json(report_dir / "metrics.json", report)
        report_paths = [report_dir / "metrics.json", write_table(metrics, chance, report_dir / "metrics.md"),
                        plot_metrics(metrics, max(ks), report_dir / "recall.png", chance[f"recall@{max(ks)}"])]
    export_path = None
    if config.export_dir:
        card = {"backbone": str(config.backbone), "held_out_metrics": metrics["text_two_tower"],
                "config": dataclasses.asdict(config)}
        with WorkerOutput(config.export_dir) as export_dir:
            export_path = export_recommender(recommenders["text_two_tower"], export_dir, config.model_name,
                                             config.top_k, warmup_user_ids=users.user_ids[:3], card=card)
    if not is_chief():
        report_paths, export_path = [], None
    return RecommendationResult(metrics, recommenders["text_two_tower"], report_paths, export_path)


def describe(result):
    """The run's closing lines: the metrics table and where everything is."""
    lines = []
    for method, figures in result.metrics.items():
        for split in ("overall", "cold_start"):
            row = "  ".join(f"{name} {value:.3f}" for name, value in figures[split].items() if name != "users")
            lines.append(f"{method:>15} {split:>10}: {row}")
    lines += [f"wrote {path}" for path in result.report_paths]
    if result.export_path:
        lines.append(f"SavedModel: {result.export_path}")
    return "\n".join(lines)
