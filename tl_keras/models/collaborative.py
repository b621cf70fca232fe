"""The collaborative baselines a two-tower model must beat: popularity,
item-kNN (cosine) and EASE (Steck, 2019), each scoring every item for a
user from the user's training items alone.

They are a few lines of numpy over the user × item matrix; no maintained
Keras library provides them (keras-rs has none), so they are written here.
Items are numbered from 1; column 0 is padding and always scores 0.

Example:
>>> matrix = interaction_matrix(split.train, num_users, num_items)
>>> scores = EASE(regularization=200).fit(matrix).scores(matrix[test_users])
"""

import numpy as np


def interaction_matrix(interactions, num_users, num_items):
    """A float32 `[num_users + 1, num_items + 1]` 0/1 matrix of who
    interacted with what (repeats count once)."""
    matrix = np.zeros((num_users + 1, num_items + 1), np.float32)
    matrix[interactions.users, interactions.items] = 1.0
    return matrix


class Popularity:
    """Every user gets each item's training count as its score (items
    without training interactions score 0)."""

    def fit(self, matrix):
        self.counts = matrix.sum(axis=0)
        return self

    def scores(self, rows):
        return np.broadcast_to(self.counts, (len(rows), len(self.counts)))


class ItemKNN:
    """Item-to-item cosine similarity over the interaction matrix; a user's
    score for an item is the sum of its similarities to the user's items.

    Args:
        neighbours: keep each item's `neighbours` most similar items
            (`None`: all).
    """

    def __init__(self, neighbours=None):
        if neighbours is not None and neighbours < 1:
            raise ValueError(f"`neighbours` must be >= 1 or None, received {neighbours!r}.")
        self.neighbours = neighbours

    def fit(self, matrix):
        norms = np.sqrt(matrix.sum(axis=0)) + 1e-9
        similarity = (matrix.T @ matrix) / norms[:, None] / norms[None, :]
        np.fill_diagonal(similarity, 0.0)
        if self.neighbours is not None and self.neighbours < similarity.shape[1]:
            weakest = np.argpartition(-similarity, self.neighbours, axis=1)[:, self.neighbours:]
            np.put_along_axis(similarity, weakest, 0.0, axis=1)
        self.similarity = similarity.astype(np.float32)
        return self

    def scores(self, rows):
        return rows @ self.similarity


class EASE:
    """Embarrassingly Shallow Autoencoder: the closed-form item-item weights
    `B = I - P / diag(P)` with `P = (XᵀX + λI)⁻¹` and a zero diagonal.

    Args:
        regularization: λ, the L2 penalty (larger for sparser data).
    """

    def __init__(self, regularization=200.0):
        if not regularization > 0:
            raise ValueError(f"`regularization` must be > 0, received {regularization!r}.")
        self.regularization = regularization

    def fit(self, matrix):
        gram = (matrix.T @ matrix).astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.regularization
        precision = np.linalg.inv(gram)
        weights = -precision / np.diag(precision)[None, :]
        np.fill_diagonal(weights, 0.0)
        self.weights = weights.astype(np.float32)
        return self

    def scores(self, rows):
        return rows @ self.weights


def text_similarity_scores(text_features, histories):
    """The content baseline, the only one that scores new items: the cosine
    of each item's text embedding with the mean of the user's recent items'.

    Args:
        text_features: `[num_items, d]` frozen text embeddings.
        histories: int `[rows, H]` recent item numbers (0 = padding).
    """
    table = np.concatenate([np.zeros((1, text_features.shape[1]), np.float32), text_features])
    table = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-9)
    profiles = table[histories].sum(axis=1)
    return profiles @ table.T
