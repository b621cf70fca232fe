"""The recommendation job end to end: catalogue and interactions in, a
metrics table and a retrieval SavedModel out, over `Retrieval`.

Data flows one way: read → time-ordered split → frozen text embeddings of
every item (once, cached) → two towers → in-batch softmax training →
recall/NDCG overall and on cold-start items, beside an id-only two-tower and
a popularity ranking → export of the text model.
"""

import pathlib

import keras
import numpy as np

from tl_keras.data.interactions import read_interactions, read_items, read_users, time_ordered_split
from tl_keras.evaluation.ranking import chance_recall, evaluate_ranking, plot_metrics, popularity_scores, write_table
from tl_keras.models.two_tower import item_log_probabilities
from tl_keras.tasks.retrieval import Retrieval, held_out, item_text_features
from tl_keras.training.distribution import pick_distribution
from tl_keras.training.runs import holding_run_folder
from tl_keras.workflows.common import RunResult, finish
from tl_keras.workflows.configs import RecommendationConfig  # noqa: F401  (the config of `run`)

METHODS = ("text_two_tower", "id_two_tower", "popularity")


def parse_ks(text):
    """`"10,50"` as `(10, 50)`; anything else is refused, echoing it."""
    try:
        ks = tuple(int(k) for k in str(text).split(","))
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise ValueError(f"`ks` must be comma-separated whole numbers >= 1, such as '10,50'; received {text!r}.")
    return ks


@holding_run_folder
def run(config, distribution=None):
    """Trains the text two-tower model and the baselines, evaluates them on
    the time-ordered split and (optionally) exports the text model; see
    `RecommendationConfig`. Returns a `RunResult` whose `task` is the text
    `Retrieval` and whose `metrics` are by method."""
    ks = parse_ks(config.ks)
    catalog = read_items(config.items)
    users = read_users(config.users) if config.users else None
    interactions, users = read_interactions(config.interactions, catalog, users)
    split = time_ordered_split(interactions, config.holdout)
    if not len(split.test):
        raise ValueError(f"No user has more than holdout={config.holdout} interactions; nothing to evaluate.")
    output_dir = pathlib.Path(config.output_dir)
    distribution = distribution or pick_distribution(config.distribute)
    print(f"{len(catalog)} items, {len(users)} users, {len(split.train)} training and {len(split.test)} held-out "
          f"interactions, {len(split.cold_items)} cold-start items")

    known = np.zeros(len(catalog), bool)
    known[np.unique(split.train.items) - 1] = True
    log_probabilities = item_log_probabilities(split.train.items, len(catalog)) if config.logq_correction else None
    towers = dict(embedding_dim=config.embedding_dim, history_length=config.history_length,
                  temperature=config.temperature, remove_accidental_hits=config.remove_accidental_hits,
                  item_log_probabilities=log_probabilities, use_user_ids=config.user_id_embedding)
    keras.utils.set_random_seed(config.seed)
    with distribution.scope():
        features, encoder, preprocessor, settings = item_text_features(
            catalog, config.backbone, config.sequence_length, config.pooling, output_dir / "feature_cache",
            config.verbose)
        models = {
            "text_two_tower": Retrieval(catalog, users, features, known if config.item_id_embedding else None,
                                        encoder, preprocessor, settings=settings, **towers),
            "id_two_tower": Retrieval(catalog, users, None, known, **towers),
        }
    metrics, losses = {}, {}
    for name, model in models.items():
        print(f"training {name}")
        losses[name] = model.fit(split.train, epochs=config.epochs, batch_size=config.batch_size,
                                 learning_rate=config.learning_rate, distribution=distribution, seed=config.seed,
                                 verbose=config.verbose).history["loss"]
        metrics[name] = model.evaluate_report(split, ks, config.seed)
    test_users, relevant, exclude = held_out(split, len(catalog))
    scores = popularity_scores(split.train.items, len(catalog), len(test_users))
    metrics["popularity"] = {"split": "test",
                             **evaluate_ranking(scores, relevant, exclude, split.cold_items, ks, config.seed)}
    chance = {f"recall@{k}": chance_recall(k, len(catalog), exclude.sum(axis=1)) for k in ks}
    report = {**metrics, "chance": chance}
    history = {"training_loss": losses, "data": {"items": len(catalog), "users": len(users),
                                                 "train": len(split.train), "test": len(split.test),
                                                 "cold_items": len(split.cold_items)}}
    text_model = models["text_two_tower"]

    def write_reports(folder):
        return [write_table(metrics, chance, folder / "metrics.md"),
                plot_metrics(metrics, max(ks), folder / "recall.png", chance[f"recall@{max(ks)}"])]

    def export(folder, card):
        return text_model.export(folder, config.model_name, config.top_k, warmup_user_ids=users.user_ids[:3],
                                 card=card)

    return finish(RunResult(text_model, report, history), config, write_reports, export)


def describe(result):
    """The run's closing lines: the metrics table and where everything is."""
    lines = []
    for method, figures in result.metrics.items():
        if method == "chance":
            continue
        for split in ("overall", "cold_start"):
            row = "  ".join(f"{name} {value:.3f}" for name, value in figures[split].items() if name != "users")
            lines.append(f"{method:>15} {split:>10}: {row}")
    return "\n".join(lines + result.written())
