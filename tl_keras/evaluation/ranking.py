"""Ranking items for users and measuring the rankings: recall@k and NDCG@k,
overall and on cold-start items, plus the popularity baseline.

Ties are broken by a seeded random key, so a model that gives many items the
same score (an id-only model on unseen items, popularity on new items) is
measured at chance among them, not favoured by catalogue order.
"""

import numpy as np

from tl_keras.evaluation.plots import pyplot
from tl_keras.models.recommender import top_k


def recall_and_ndcg(ranked, relevant, k):
    """Mean recall@k and NDCG@k over the users with relevant items.

    Args:
        ranked: int array `[users, >= k]` of ranked item numbers.
        relevant: a list of sets of item numbers, one a user.
        k: the cut-off.
    """
    recalls, ndcgs = [], []
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for row, items in zip(ranked, relevant):
        if not items:
            continue
        hits = np.isin(row[:k], list(items))
        recalls.append(hits.sum() / len(items))
        ndcgs.append((hits * discounts).sum() / discounts[: min(len(items), k)].sum())
    if not recalls:
        return float("nan"), float("nan")
    return float(np.mean(recalls)), float(np.mean(ndcgs))


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


def popularity_scores(train_items, num_items, num_rows):
    """The popularity baseline: every user gets each item's training count
    as its score (new items score 0)."""
    counts = np.bincount(train_items, minlength=num_items + 1)[: num_items + 1].astype(np.float64)
    return np.broadcast_to(counts, (num_rows, num_items + 1))


def chance_recall(k, num_items, excluded):
    """The recall@k of a random ranking: `k` over the items left to rank."""
    return float(np.mean(np.minimum(1.0, k / np.maximum(num_items - excluded, 1))))


def write_table(metrics, chance, path):
    """Writes the methods side by side as a Markdown table."""
    columns = [name for name in next(iter(metrics.values()))["overall"] if name != "users"]
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
