"""A trained two-tower model as a recommender: the item-embedding index,
top-k recommendation by brute-force scoring, and embedding of new item texts
so new items join the index without retraining.
"""

import numpy as np

from tl_keras.data.interactions import Catalog, pack_recent, ragged_rows
from tl_keras.data.texts import DataError
from tl_keras.data.tokens import predict_in_length_order, tokenize
from tl_keras.models.two_tower import unit_length


def top_k(scores, k, exclude=None, seed=None):
    """Returns the item numbers of the `k` best scores in each row.

    Args:
        scores: float array `[users, num_items + 1]`; column 0 (padding) is
            never returned.
        k: how many items a row.
        exclude: bool array like `scores`: items never to return (already
            seen), or `None`.
        seed: the seed of the random tie-breaking key; `None` breaks ties
            by item number (as `tf.math.top_k` does).

    Example:
    >>> top_k(np.array([[0.0, 0.2, 0.9, 0.5]]), k=2)
    array([[2, 3]])
    """
    scores = np.array(scores, dtype=np.float64)
    scores[:, 0] = -np.inf
    if exclude is not None:
        scores[exclude] = -np.inf
    if seed is None:
        return np.argsort(-scores, axis=-1, kind="stable")[:, :k]
    ties = np.random.default_rng(seed).random(scores.shape)
    return np.lexsort((ties, -scores), axis=-1)[:, :k]


def recent_item_numbers(catalog, recent_item_ids, length):
    """Maps lists of recent item ids to a `[rows, length]` int32 array of
    item numbers holding each row's last `length` items, packed by
    `pack_recent` as the SavedModel packs them. Empty strings are padding;
    an unknown id is a `DataError` naming it."""
    rows = []
    for row, item_ids in enumerate(recent_item_ids):
        unknown = [item_id for item_id in item_ids if item_id and item_id not in catalog.index]
        if unknown:
            raise DataError(f"Unknown item id {unknown[0]!r} in the recent items of request row {row}.")
        rows.append([catalog.index[item_id] for item_id in item_ids if item_id])
    return pack_recent(ragged_rows(rows), length).numpy()


class Recommender:
    """Recommends items with a trained `TwoTowerModel`.

    The item index (`item_matrix`, `[num_items + 1, D]`, row 0 zero) is the
    item tower's output for every catalogue item, computed once.

    Args:
        model: the trained `TwoTowerModel`.
        catalog: the `Catalog` it was trained on.
        users: the `Users` (ids and features).
        history_length: how many recent items the user tower pools.
        encoder, preprocessor: the frozen text encoder and its preprocessor,
            to embed new item texts (`None` for an id-only model).

    Example:
    >>> recommender = Recommender(model, catalog, users, 10, encoder, preprocessor)
    >>> item_ids, scores = recommender.recommend(["u0001"], [["kit-003"]], k=5)
    """

    def __init__(self, model, catalog, users, history_length, encoder=None, preprocessor=None, item_matrix=None):
        self.model = model
        self.catalog = catalog
        self.users = users
        self.history_length = history_length
        self.encoder = encoder
        self.preprocessor = preprocessor
        if item_matrix is None:
            item_matrix = np.asarray(model.item_tower(np.arange(len(catalog) + 1, dtype=np.int32)))
        self.item_matrix = item_matrix

    def user_embeddings(self, user_numbers, histories):
        """Unit-length user embeddings from user numbers and `[rows, H]`
        recent item numbers (looked up in the current item index)."""
        history_embeddings = self.item_matrix[np.asarray(histories)]
        return np.asarray(self.model.user_tower(np.asarray(user_numbers, np.int32), history_embeddings))

    def scores(self, user_numbers, histories):
        """Cosine scores `[rows, num_items + 1]` (column 0 is padding)."""
        return self.user_embeddings(user_numbers, histories) @ self.item_matrix.T

    def recommend(self, user_ids, recent_item_ids, k=10):
        """Top-`k` item ids and scores for each user, leaving out the items
        in the request. An unknown user id is scored from recent items
        alone (its features unknown too).

        Returns:
            `(item_ids, scores)`: a `[rows, k]` array of str and of float.
        """
        numbers = recent_item_numbers(self.catalog, recent_item_ids, self.history_length)
        users = np.array([self.users.index.get(user_id, 0) for user_id in user_ids], np.int32)
        scores = self.scores(users, numbers)
        exclude = np.zeros(scores.shape, bool)
        for row, item_ids in enumerate(recent_item_ids):
            exclude[row, [self.catalog.index[i] for i in item_ids if i]] = True
        best = top_k(scores, k, exclude)
        names = np.array([""] + list(self.catalog.item_ids), dtype=object)
        return names[best], np.take_along_axis(scores, best, axis=1)

    def embed_texts(self, texts, batch_size=64):
        """Item embeddings for new item texts (text alone, no id vector)."""
        if self.encoder is None:
            raise ValueError("This recommender has no text tower (id-only); it cannot embed item texts.")
        tokens = tokenize(list(texts), self.preprocessor, verbose=0)
        features = predict_in_length_order(self.encoder, tokens, batch_size)
        return np.asarray(unit_length(self.model.item_tower.projection(features)))

    def add_items(self, item_ids, texts):
        """Returns a `Recommender` whose index also holds the new items,
        embedded from their texts; the trained towers are unchanged.

        Example:
        >>> recommender = recommender.add_items(["kit-900"], ["copper kettle, kitchen"])
        """
        empty = [item_id for item_id, text in zip(item_ids, texts) if not str(text).strip()]
        if empty:
            raise DataError(f"New items with an empty text: {empty}.")
        self._check_new(item_ids)
        return self.add_item_vectors(item_ids, self.embed_texts(texts), texts)

    def add_item_vectors(self, item_ids, vectors, texts=None):
        """Returns a `Recommender` whose index also holds new items given
        by their vectors (an item index built by `tl-keras
        embed-catalogue`, from this model's export); the towers are
        unchanged.

        Example:
        >>> recommender = recommender.add_item_vectors(*read_item_index("indexes/new_products"))
        """
        self._check_new(item_ids)
        vectors = np.asarray(vectors, np.float32)
        if vectors.shape != (len(item_ids), self.item_matrix.shape[1]):
            raise ValueError(f"New item vectors must be [{len(item_ids)}, {self.item_matrix.shape[1]}] (one an "
                             f"item, this index's width), received {list(vectors.shape)}.")
        texts = list(texts) if texts is not None else [""] * len(item_ids)
        catalog = Catalog(list(self.catalog.item_ids) + list(item_ids), list(self.catalog.texts) + texts)
        return Recommender(self.model, catalog, self.users, self.history_length, self.encoder, self.preprocessor,
                           item_matrix=np.concatenate([self.item_matrix, vectors]))

    def _check_new(self, item_ids):
        duplicates = sorted(set(item_ids) & set(self.catalog.item_ids))
        if duplicates or len(set(item_ids)) != len(item_ids):
            raise DataError(f"New item ids must be new and distinct; received {list(item_ids)[:20]!r} "
                            f"(already in the catalogue: {duplicates[:20]}).")
