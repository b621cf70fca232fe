"""SavedModel export of a `Recommender` for TF Serving.

Signatures:
- `serving_default`: `user_id` (DT_STRING, [-1]) and `recent_item_ids`
  (DT_STRING, [-1, -1], "" as padding) to `item_ids` (DT_STRING, [-1, k])
  and `scores` (float, [-1, k]): brute-force scoring of the user embedding
  against the stored item-embedding matrix, leaving out the recent items.
  An unknown user is scored from the recent items alone; an unknown recent
  item id fails the request with the id named.
- `embed_items` (text towers only): `text` (DT_STRING, [-1]) to
  `embeddings` [-1, D], the item tower's embedding of new item texts, so new
  items can be added to the index without retraining
  (`Recommender.add_items`, then export again).
"""

import numpy as np
import tensorflow as tf

from tl_keras.data.interactions import pack_recent
from tl_keras.export.saved_model import ServingModule
from tl_keras.export.text import token_inputs
from tl_keras.models.two_tower import unit_length


class RetrievalServingModule(ServingModule):
    """The serving graph of a `Recommender`; see the module docstring.

    Args:
        recommender: the `Recommender` to serve.
        k: how many items a request returns.
    """

    def __init__(self, recommender, k):
        super().__init__("retrieval_serving")
        if not 1 <= k <= len(recommender.catalog):
            raise ValueError(f"`k` must be in [1, {len(recommender.catalog)}] (the catalogue size), received {k!r}.")
        self.k = k
        self.history_length = recommender.history_length
        self.item_matrix = tf.Variable(recommender.item_matrix.astype(np.float32), trainable=False, name="item_matrix")
        self.item_ids = tf.constant([""] + list(recommender.catalog.item_ids))
        self.item_numbers = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(recommender.catalog.item_ids)),
                tf.range(1, len(recommender.catalog) + 1, dtype=tf.int32)),
            default_value=-1)
        self.user_numbers = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(
                tf.constant(list(recommender.users.user_ids) or [""]),
                tf.range(1, max(len(recommender.users), 1) + 1, dtype=tf.int32)),
            default_value=0)
        self._user_tower = self.track(recommender.model.user_tower)
        self.endpoint("serving_default", self._serve, [
            tf.TensorSpec([None], tf.string, name="user_id"),
            tf.TensorSpec([None, None], tf.string, name="recent_item_ids"),
        ])
        if recommender.encoder is not None:
            self.preprocessor = recommender.preprocessor
            projection = recommender.model.item_tower.projection
            self._encoder = self.track(recommender.encoder)
            self._projection = self.track(projection)
            self.endpoint("embed_items", self._embed_items, [tf.TensorSpec([None], tf.string, name="text")])

    def _serve(self, user_id, recent_item_ids):
        numbers = self.item_numbers.lookup(recent_item_ids)
        numbers = tf.where(recent_item_ids == "", 0, numbers)
        unknown = numbers < 0
        check = tf.debugging.Assert(tf.logical_not(tf.reduce_any(unknown)),
                                    ["Unknown item ids in recent_item_ids:", tf.boolean_mask(recent_item_ids, unknown)],
                                    summarize=10)
        with tf.control_dependencies([check]):  # Before any op indexes with an unknown (-1) number.
            numbers = tf.identity(numbers)
        history = pack_recent(numbers, self.history_length)  # As training and `Recommender` pack it.
        users = self.user_numbers.lookup(user_id)
        user = self._user_tower.value(users, tf.gather(self.item_matrix, history), training=False)
        scores = tf.matmul(user, self.item_matrix, transpose_b=True)
        # Mark the recent items (and column 0, padding, which every row has
        # or gets) so they are never returned.
        rows = tf.repeat(tf.range(tf.shape(numbers)[0]), tf.shape(numbers)[1])
        marks = tf.stack([rows, tf.reshape(numbers, [-1])], axis=1)
        seen = tf.scatter_nd(marks, tf.ones_like(rows), tf.shape(scores)) > 0
        seen = tf.logical_or(seen, tf.equal(tf.range(tf.shape(scores)[1]), 0)[None, :])
        scores = tf.where(seen, tf.constant(-np.inf, scores.dtype), scores)
        best = tf.math.top_k(scores, k=self.k)
        return {"item_ids": tf.gather(self.item_ids, best.indices), "scores": best.values}

    def _embed_items(self, text):
        inputs = self.preprocessor(text)
        features = self._encoder.value(token_inputs(inputs, self._encoder.value),
                                       training=False)
        return {"embeddings": unit_length(self._projection.value(features))}


def export_recommender(recommender, export_dir, model_name, k=10, version=None, warmup_user_ids=(), card=None):
    """Exports a `Recommender` as a TF Serving SavedModel, atomically.

    Args:
        recommender: the `Recommender` (its current item index is stored).
        export_dir: the base folder TF Serving watches.
        model_name: the model's folder name under `export_dir`.
        k: how many items `serving_default` returns.
        version: an integer version; the next free one if `None`.
        warmup_user_ids: user ids for warm-up requests (no recent items).
        card: extra JSON-ready facts for `model_card.json`.

    Returns:
        The version folder, a `pathlib.Path`.

    Example:
    >>> export_recommender(recommender, "exports", "shop_retrieval", k=20)
    PosixPath('exports/shop_retrieval/1')
    """
    module = RetrievalServingModule(recommender, k)
    card = {"task": "retrieval", "k": k, "items": len(recommender.catalog), "users": len(recommender.users),
            "history_length": recommender.history_length, **(card or {})}
    warmup = [{"user_id": np.array([user_id]), "recent_item_ids": np.array([[""]])} for user_id in warmup_user_ids]
    return module.write(export_dir, model_name, version, warmup, card)
