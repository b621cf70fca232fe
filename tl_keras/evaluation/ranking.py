"""Ranking items for users and measuring the rankings: recall@k and NDCG@k,
overall and on cold-start items, plus the popularity baseline.

Ties are broken by a seeded random key, so a model that gives many items the
same score (an id-only model on unseen items, popularity on new items) is
measured at chance among them, not favoured by catalogue order.
"""

import keras_rs
import numpy as np

from tl_keras.evaluation.plots import pyplot
from tl_keras.models.recommender import top_k


def ranked_lists(ranked, relevant):
    """The ranking as keras-rs metrics read it: a row a user with relevant
    items, `y_true` 1 for the relevant ones among the ranked items, then a
    1 for each relevant item the ranking left out (scored below every ranked
    item, so recall counts it as missed), `y_pred` descending by rank."""
    rows = [row for row, items in enumerate(relevant) if items]
    width = ranked.shape[1] + max(len(relevant[row]) for row in rows)
    y_true = np.zeros((len(rows), width), np.float32)
    for out, row in enumerate(rows):
        hits = np.isin(ranked[row], list(relevant[row]))
        y_true[out, : ranked.shape[1]] = hits
        y_true[out, ranked.shape[1]: ranked.shape[1] + len(relevant[row]) - hits.sum()] = 1.0
    y_pred = np.zeros((len(rows), width), np.float32)
    y_pred[:, : ranked.shape[1]] = np.arange(ranked.shape[1], 0, -1)
    return y_true, y_pred


def recall_and_ndcg(ranked, relevant, k):
    """Mean recall@k and NDCG@k (keras-rs' `RecallAtK` and `NDCG`) over the
    users with relevant items.

    Args:
        ranked: int array `[users, >= k]` of ranked item numbers.
        relevant: a list of sets of item numbers, one a user.
        k: the cut-off.
    """
    if not any(relevant):
        return float("nan"), float("nan")
    y_true, y_pred = ranked_lists(np.asarray(ranked)[:, :k], relevant)
    figures = []
    for metric in (keras_rs.metrics.RecallAtK(k=k), keras_rs.metrics.NDCG(k=k)):
        metric.update_state(y_true, y_pred)
        figures.append(float(metric.result()))
    return tuple(figures)


def evaluate_ranking(scores, relevant, exclude, cold_items, ks=(10, 50), seed=0):
    """Recall@k and NDCG@k overall and for cold-start items.

    Args:
        scores: `[users, num_items + 1]` scores, a row a test user.
        relevant: a set of held-out item numbers a row.
        exclude: bool `[users, num_items + 1]`: the users'
            training items, removed from the ranking.
        cold_items: item numbers absent from training; the cold-start
            figures keep only these among each user's relevant items (users
            with none are left out).
        ks: the cut-offs.

    Returns:
        `{"overall": {"recall@10": ..., "ndcg@10": ..., "users": n}, "cold_start": {...}}`.
    """
    ranked = top_k(scores, max(ks), exclude, seed)
    cold = set(np.asarray(cold_items).tolist())
    groups = {"overall": relevant, "cold_start": [items & cold for items in relevant]}
    result = {}
    for name, group in groups.items():
        figures = {"users": sum(1 for items in group if items)}
        for k in ks:
            figures[f"recall@{k}"], figures[f"ndcg@{k}"] = recall_and_ndcg(ranked, group, k)
        result[name] = figures
    return result


def chance_recall(k, num_items, excluded):
    """The recall@k of a random ranking: `k` over the items left to rank."""
    return float(np.mean(np.minimum(1.0, k / np.maximum(num_items - excluded, 1))))


GROUPS = {"overall": "test, every user", "cold_start": "test items unseen in training",
          "new_items": "new items, ranked among the new", "new_users": "new users (few interactions)"}


def groups_of(metrics):
    """The evaluation groups present, in `GROUPS` order."""
    present = {group for figures in metrics.values() for group in figures if group in GROUPS}
    return [group for group in GROUPS if group in present]


def write_table(metrics, chance, path):
    """Writes the methods side by side as a Markdown table, a block of rows
    per evaluation group, each with a random ranking's recall.

    Args:
        metrics: `{method: {group: {"recall@10": ..., "users": n}}}`.
        chance: `{group: {"recall@10": ...}}`.
    """
    columns = [name for name in next(iter(metrics.values()))["overall"] if name != "users"]
    lines = ["| group | method | " + " | ".join(columns) + " | users |", "|---|---|" + "---|" * (len(columns) + 1)]
    for group in groups_of(metrics):
        for method, figures in metrics.items():
            if group in figures:
                cells = " | ".join(f"{figures[group][c]:.4f}" for c in columns)
                lines.append(f"| {GROUPS[group]} | {method} | {cells} | {figures[group]['users']} |")
        if group in chance:
            cells = " | ".join(f"{chance[group][c]:.4f}" if c in chance[group] else "" for c in columns)
            lines.append(f"| {GROUPS[group]} | chance | {cells} | |")
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_metrics(metrics, k, path, chance=None):
    """Bar charts of recall@k per method, a panel per evaluation group,
    each with a random ranking's recall@k as a dashed line."""
    plt = pyplot()
    groups = groups_of(metrics)
    figure, axes = plt.subplots(1, len(groups), figsize=(4.2 * len(groups), 3.8), squeeze=False)
    for axis, group in zip(axes[0], groups):
        methods = [method for method in metrics if group in metrics[method]]
        values = [metrics[method][group][f"recall@{k}"] for method in methods]
        bars = axis.bar(np.arange(len(methods)), values, color=["tab:blue" if "two_tower" in m else "tab:grey"
                                                                for m in methods])
        axis.bar_label(bars, fmt="%.3f", fontsize=7)
        if chance and group in chance:
            axis.axhline(chance[group][f"recall@{k}"], color="tab:red", linestyle="--", label="chance")
            axis.legend(fontsize=8)
        axis.set_xticks(np.arange(len(methods)), methods, rotation=35, ha="right", fontsize=8)
        axis.set_title(f"{GROUPS[group]} ({metrics[methods[0]][group]['users']} users)", fontsize=9)
        axis.set_ylabel(f"recall@{k}")
    figure.suptitle("Held-out recall by method (test split)")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
