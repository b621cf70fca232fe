"""The recommendation job end to end: catalogue and interactions in, a
metrics table and a retrieval SavedModel out, over `Retrieval`.

Data flows one way: read → time-ordered split (each user's last `holdout`
interactions are the test) and, inside training, a validation slice (each
user's last training interaction) → frozen text embeddings of every item
(once, cached) → the baselines (popularity, item-kNN, EASE with λ chosen on
validation, text similarity, an id-only two-tower) and the two-tower model,
epochs chosen on validation and then refitted on all training data →
recall/NDCG on the test, overall and on the cold-start split (new items
ranked among the new items, new users with `cold_start_keep` interactions)
→ export of the two-tower model.
"""

import contextlib
import pathlib

import keras
import numpy as np

from tl_keras.data.interactions import (cold_start_split, histories, read_interactions, read_items, read_users,
                                        time_ordered_split)
from tl_keras.evaluation.ranking import GROUPS, chance_recall, evaluate_ranking, plot_metrics, write_table
from tl_keras.models.collaborative import EASE, ItemKNN, Popularity, interaction_matrix, text_similarity_scores
from tl_keras.models.two_tower import item_log_probabilities
from tl_keras.tasks.retrieval import Retrieval, ValidationRecall, held_out, item_text_features
from tl_keras.training.distribution import pick_distribution, set_precision
from tl_keras.training.runs import holding_run_folder, keep_trained_model
from tl_keras.workflows.common import RunResult, finish
from tl_keras.workflows.configs import RecommendationConfig  # noqa: F401  (the config of `run`)

TWO_TOWERS = ("two_tower", "id_two_tower")
BASELINES = ("popularity", "item_knn", "ease", "text_similarity")
# EASE's λ is chosen on validation among these (Steck's range for data of
# this density).
EASE_REGULARIZATION = (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0)


def parse_ks(text):
    """`"10,50"` as `(10, 50)`; anything else is refused, echoing it."""
    try:
        ks = tuple(int(k) for k in str(text).split(","))
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise ValueError(f"`ks` must be comma-separated whole numbers >= 1, such as '10,50'; received {text!r}.")
    return ks


def baseline_scores(method, split, test_users, num_users, num_items, text_features, history_length,
                    regularization=200.0):
    """A baseline's scores `[test users, num_items + 1]` for a split, from
    its training interactions alone."""
    if method == "text_similarity":
        return text_similarity_scores(text_features, histories(split.train, num_users, history_length)[test_users])
    matrix = interaction_matrix(split.train, num_users, num_items)
    model = {"popularity": Popularity, "item_knn": ItemKNN,
             "ease": lambda: EASE(regularization)}[method]()
    return model.fit(matrix).scores(matrix[test_users])


def score_baseline(method, split, num_users, num_items, text_features, history_length, ks, seed, candidates=None,
                   regularization=200.0, split_name="test"):
    """A baseline's recall/NDCG on a split (see `evaluate_ranking`)."""
    test_users, relevant, exclude = held_out(split, num_items, candidates)
    scores = baseline_scores(method, split, test_users, num_users, num_items, text_features, history_length,
                             regularization)
    return {"split": split_name, **evaluate_ranking(scores, relevant, exclude, split.cold_items, ks, seed)}


def chance_of(split, num_items, ks, candidates=None):
    """A random ranking's recall@k on a split: `k` over the items left to
    rank for each test user."""
    _, _, exclude = held_out(split, num_items, candidates)
    return {f"recall@{k}": chance_recall(k, num_items, exclude.sum(axis=1)) for k in ks}


@holding_run_folder
def run(config, distribution=None):
    """Trains the two-tower model and the baselines, chooses their settings
    on the validation slice, evaluates them on the test split and the
    cold-start split and (optionally) exports the two-tower model; see
    `RecommendationConfig`. Returns a `RunResult` whose `task` is the
    two-tower `Retrieval` and whose `metrics` are by method."""
    ks = parse_ks(config.ks)
    catalog = read_items(config.items)
    users = read_users(config.users) if config.users else None
    interactions, users = read_interactions(config.interactions, catalog, users)
    split = time_ordered_split(interactions, config.holdout)
    if not len(split.test):
        raise ValueError(f"No user has more than holdout={config.holdout} interactions; nothing to evaluate.")
    validation = time_ordered_split(split.train, 1)
    output_dir = pathlib.Path(config.output_dir)
    set_precision(config.runtime.precision)
    distribution = distribution or pick_distribution(config.runtime.distribute)
    num_users, num_items = len(users), len(catalog)
    print(f"{num_items} items, {num_users} users, {len(validation.train)} training, {len(validation.test)} "
          f"validation and {len(split.test)} test interactions, {len(split.cold_items)} test items unseen in "
          "training")
    cold = None
    if config.cold_start_items and config.cold_start_users:
        cold = cold_start_split(interactions, config.cold_start_items, config.cold_start_users,
                                config.cold_start_keep, config.holdout, config.training.seed)
        print(f"cold-start split: {len(cold.new_items.cold_items)} new items, "
              f"{len(np.unique(cold.new_users.test.users))} new users with {config.cold_start_keep} "
              "training interactions each")

    keras.utils.set_random_seed(config.training.seed)
    with distribution.scope():
        features, encoder, preprocessor, settings = item_text_features(
            catalog, config.backbone, config.sequence_length, config.pooling, output_dir / "feature_cache",
            config.training.verbose)

    def two_tower(name, train):
        known = np.zeros(num_items, bool)
        known[np.unique(train.items) - 1] = True
        with distribution.scope():
            return Retrieval(
                catalog, users, features if name == "two_tower" else None,
                known if (config.item_id_embedding or name == "id_two_tower") else None, encoder, preprocessor,
                embedding_dim=config.embedding_dim, history_length=config.history_length,
                temperature=config.temperature, remove_accidental_hits=config.remove_accidental_hits,
                item_log_probabilities=item_log_probabilities(train.items, num_items) if config.logq_correction
                else None, use_user_ids=config.user_id_embedding, history_pooling=config.history_pooling,
                sampled_negatives=config.sampled_negatives, text_hidden_dim=config.text_hidden_dim,
                id_dropout=config.id_dropout, seed=config.training.seed,
                settings=settings)

    def fit(model, train, epochs, validation_split=None):
        return model.fit(train, epochs=epochs, batch_size=config.training.batch_size,
                         learning_rate=config.training.head_learning_rate, distribution=distribution,
                         seed=config.training.seed, verbose=config.training.verbose, validation=validation_split,
                         patience=config.patience).history

    metrics, training = {}, {}
    # Once the two-tower model is trained, any later failure keeps its weights.
    with contextlib.ExitStack() as after_training:
        for name in TWO_TOWERS:
            print(f"{name}: choosing epochs on validation")
            curve = fit(two_tower(name, validation.train), validation.train, config.training.epochs, validation)
            epochs = int(np.argmax(curve[ValidationRecall.name])) + 1
            print(f"{name}: best validation recall@10 {max(curve[ValidationRecall.name]):.4f} after {epochs} "
                  f"epoch(s); training on all training interactions")
            model = two_tower(name, split.train)
            training[name] = {"validation": curve, "epochs": epochs, "loss": fit(model, split.train, epochs)["loss"]}
            if name == "two_tower":
                final = model
                after_training.enter_context(keep_trained_model(final, output_dir, "scoring the methods"))
            metrics[name] = {**model.evaluate_report(split, ks, config.training.seed),
                             "validation_recall@10": float(max(curve[ValidationRecall.name]))}
            if cold is not None:
                print(f"{name}: training on the cold-start split")
                cold_model = two_tower(name, cold.new_items.train)
                fit(cold_model, cold.new_items.train, epochs)
                metrics[name]["new_items"] = cold_model.evaluate_report(
                    cold.new_items, ks, config.training.seed, candidates=cold.new_items.cold_items)["overall"]
                metrics[name]["new_users"] = cold_model.evaluate_report(
                    cold.new_users, ks, config.training.seed)["overall"]

        choices = {}
        for regularization in EASE_REGULARIZATION:
            figures = score_baseline("ease", validation, num_users, num_items, features, config.history_length,
                                     (10,), config.training.seed, regularization=regularization)
            choices[regularization] = figures["overall"]["recall@10"]
        regularization = max(choices, key=choices.get)
        print(f"ease: λ = {regularization:g} chosen on validation (recall@10 {choices[regularization]:.4f})")
        for method in BASELINES:
            arguments = dict(num_users=num_users, num_items=num_items, text_features=features,
                             history_length=config.history_length, ks=ks, seed=config.training.seed,
                             regularization=regularization)
            metrics[method] = score_baseline(method, split, **arguments)
            if cold is not None:
                metrics[method]["new_items"] = score_baseline(
                    method, cold.new_items, candidates=cold.new_items.cold_items, **arguments)["overall"]
                metrics[method]["new_users"] = score_baseline(method, cold.new_users, **arguments)["overall"]
        training["ease"] = {"regularization": regularization, "validation_recall@10": choices}

        chance = {"overall": chance_of(split, num_items, ks)}
        if cold is not None:
            chance["new_items"] = chance_of(cold.new_items, num_items, ks, cold.new_items.cold_items)
            chance["new_users"] = chance_of(cold.new_users, num_items, ks)
        report = {**metrics, "chance": chance}
        history = {"training": training, "data": {
            "items": num_items, "users": num_users, "train": len(split.train), "validation": len(validation.test),
            "test": len(split.test), "unseen_test_items": len(split.cold_items),
            "new_items": 0 if cold is None else len(cold.new_items.cold_items),
            "new_users": 0 if cold is None else int(len(np.unique(cold.new_users.test.users)))}}

    def write_reports(folder):
        return [write_table(metrics, chance, folder / "metrics.md"),
                plot_metrics(metrics, min(ks), folder / "recall.png", chance)]

    def export(folder, card):
        return final.export(folder, config.output.model_name, warmup=users.user_ids[:3], card=card, k=config.top_k)

    return finish(RunResult(final, report, history), config, write_reports, export)


def describe(result):
    """The run's closing lines: the metrics table and where everything is."""
    lines = []
    for method, figures in result.metrics.items():
        if method == "chance":
            continue
        for group in GROUPS:
            if group in figures:
                row = "  ".join(f"{name} {value:.3f}" for name, value in figures[group].items() if name != "users")
                lines.append(f"{method:>15} {group:>10}: {row}")
    return "\n".join(lines + result.written())
