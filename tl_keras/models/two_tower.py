"""Two-tower retrieval: an item tower over frozen text embeddings and learned
item ids, a user tower over the user's id, ordered recent items and
features, trained with a softmax over in-batch and sampled negatives.

Items are numbered from 1 (0 = padding), as in `tl_keras.data.interactions`. The
item tower holds the frozen backbone's embedding of every item text as a
constant table, so training never runs the backbone; its trainable part is a
projection and, optionally, a learned id embedding that only items seen in
training have (new items fall back to their text alone).
"""

import math

import keras
from keras import ops
import numpy as np
import keras_rs

from tl_keras.core.choices import HISTORY_POOLINGS


class ItemTower(keras.layers.Layer):
    """Item numbers to unit-length item embeddings.

    Args:
        text_features: float array `[num_items, d]` of frozen text
            embeddings in catalogue order, or `None` for an id-only tower.
        known_items: bool array `[num_items]`: items that get a learned id
            embedding (those seen in training), or `None` for none.
        embedding_dim: the output size.
        text_hidden_dim: the width of the hidden ReLU layer that maps text
            embeddings to the output (0: a linear map). A hidden layer lets
            new items, which have text alone, land nearer their peers.
        id_dropout: in training, the share of items whose id vector is
            left out, so their text alone must place them: new items, which
            have no id vector, are then scored on the same scale as known
            ones.
        seed: the seed of the id dropout.

    Example:
    >>> tower = ItemTower(features, known_items=None, embedding_dim=64)
    >>> tower(np.array([[1, 2, 0]])).shape   # 0 is padding: a zero vector
    (1, 3, 64)
    """

    def __init__(self, text_features, known_items, embedding_dim, text_hidden_dim=0, id_dropout=0.0, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        if not 0 <= id_dropout < 1:
            raise ValueError(f"`id_dropout` must be in [0, 1), received {id_dropout!r}.")
        self.id_dropout = id_dropout
        self.dropout_seed = keras.random.SeedGenerator(seed)
        if text_features is None and known_items is None:
            raise ValueError("An item tower needs `text_features`, `known_items` or both; received neither.")
        self.embedding_dim = embedding_dim
        self.num_items = len(text_features) if text_features is not None else len(known_items)
        self.text_table = None
        if text_features is not None:
            padded = np.concatenate([np.zeros((1, text_features.shape[1]), np.float32), text_features])
            self.text_table = self.add_weight(shape=padded.shape, initializer=keras.initializers.Constant(padded),
                                              trainable=False, name="text_features")
            self.projection = TextProjection(text_hidden_dim, embedding_dim, name="text_projection")
        self.id_rows = None
        if known_items is not None:
            rows = np.zeros(self.num_items + 1, np.int32)
            rows[1:][np.asarray(known_items, bool)] = np.arange(1, int(np.sum(known_items)) + 1)
            self.id_rows = self.add_weight(shape=rows.shape, dtype="int32", trainable=False, name="id_rows",
                                           initializer=keras.initializers.Constant(rows))
            self.id_embedding = keras.layers.Embedding(int(np.sum(known_items)) + 1, embedding_dim,
                                                       name="item_id_embedding")

    def build(self, input_shape):
        if self.text_table is not None:
            self.projection.build((None, self.text_table.shape[1]))
        if self.id_rows is not None:
            self.id_embedding.build(None)

    def call(self, items, training=None):
        embedding = 0.0
        if self.text_table is not None:
            embedding = self.projection(ops.take(self.text_table, items, axis=0))
        if self.id_rows is not None:
            rows = ops.take(self.id_rows, items, axis=0)
            # Row 0 (no learned id) contributes nothing, so new items are
            # embedded by their text alone.
            learned = ops.cast(ops.expand_dims(rows > 0, -1), self.compute_dtype)
            if training and self.id_dropout and self.text_table is not None:
                kept = keras.random.uniform(ops.shape(items), seed=self.dropout_seed) >= self.id_dropout
                learned = learned * ops.cast(ops.expand_dims(kept, -1), self.compute_dtype)
            embedding = embedding + self.id_embedding(rows) * learned
        present = ops.cast(ops.expand_dims(items > 0, -1), self.compute_dtype)
        return unit_length(embedding) * present

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.embedding_dim,)


class TextProjection(keras.layers.Layer):
    """Frozen text embeddings (any leading shape) to the item tower's space:
    a linear map, or a hidden ReLU layer then a linear map.

    Args:
        hidden_dim: the hidden width (0: linear).
        output_dim: the output size.
    """

    def __init__(self, hidden_dim, output_dim, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(hidden_dim, activation="relu", name="hidden") if hidden_dim else None
        self.output_layer = keras.layers.Dense(output_dim, name="output")

    def build(self, input_shape):
        if self.hidden is not None:
            self.hidden.build(input_shape)
            input_shape = tuple(input_shape[:-1]) + (self.hidden.units,)
        self.output_layer.build(input_shape)

    def call(self, features):
        return self.output_layer(self.hidden(features) if self.hidden is not None else features)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_layer.units,)


def unit_length(x):
    """Scales the last axis to unit length (zero vectors stay zero)."""
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=-1, keepdims=True), 1e-12))


class UserTower(keras.layers.Layer):
    """A user's id, recent item embeddings and categorical features to a
    unit-length user embedding.

    Args:
        num_users: users numbered 1..num_users (0 = unknown: no id vector).
        embedding_dim: the output size (the item tower's).
        user_features: int array `[num_users + 1, F]` of categorical codes
            (0 = unknown) looked up by user number, or `None`.
        feature_sizes: for each feature column, its largest code.
        use_user_ids: learn a vector per user id.
        history_length: how many recent items the tower reads (most recent
            last, left-padded with 0).
        history_pooling: `"recency"` weighs the recent items by a learned
            weight per position (a softmax over the positions present);
            `"mean"` averages them.

    Example:
    >>> tower = UserTower(num_users=300, embedding_dim=64)
    >>> tower(user, item_tower(history)).shape
    (32, 64)
    """

    def __init__(self, num_users, embedding_dim, user_features=None, feature_sizes=(), use_user_ids=True,
                 history_length=10, history_pooling="recency", **kwargs):
        super().__init__(**kwargs)
        if history_pooling not in HISTORY_POOLINGS:
            raise ValueError(f"`history_pooling` must be one of {HISTORY_POOLINGS}, received {history_pooling!r}.")
        self.embedding_dim = embedding_dim
        self.history_pooling = history_pooling
        self.recency_logits = self.add_weight(shape=(history_length,), initializer="zeros", name="recency_logits",
                                              trainable=history_pooling == "recency")
        self.user_id_embedding = keras.layers.Embedding(num_users + 1, embedding_dim, name="user_id_embedding") \
            if use_user_ids else None
        self.feature_table = None
        self.feature_embeddings = []
        if user_features is not None and user_features.shape[1]:
            self.feature_table = self.add_weight(
                shape=user_features.shape, dtype="int32", trainable=False, name="user_features",
                initializer=keras.initializers.Constant(user_features))
            self.feature_embeddings = [keras.layers.Embedding(size + 1, embedding_dim, name=f"user_feature_{i}")
                                       for i, size in enumerate(feature_sizes)]
        self.combine = keras.layers.Dense(embedding_dim, name="user_combine")

    def build(self, user_shape, history_shape=None):
        for embedding in [self.user_id_embedding, *self.feature_embeddings]:
            if embedding is not None:
                embedding.build(None)
        parts = 1 + (self.user_id_embedding is not None) + len(self.feature_embeddings)
        self.combine.build((None, parts * self.embedding_dim))

    def call(self, user, history_embeddings):
        # A weighted mean of the recent items' embeddings (padding rows are
        # zero and weigh nothing); all weights stay 1 for "mean".
        present = ops.cast(ops.any(ops.not_equal(history_embeddings, 0), axis=-1, keepdims=True), self.compute_dtype)
        # Positions count back from the most recent item, so a shorter
        # history takes the last weights.
        recency = self.recency_logits[-ops.shape(history_embeddings)[1]:]
        weights = present * ops.reshape(ops.exp(ops.cast(recency, self.compute_dtype)), (1, -1, 1))
        parts = [ops.sum(history_embeddings * weights, axis=1) / ops.maximum(ops.sum(weights, axis=1), 1e-9)]
        known = ops.cast(ops.expand_dims(user > 0, -1), self.compute_dtype)
        if self.user_id_embedding is not None:
            parts.append(self.user_id_embedding(user) * known)
        if self.feature_table is not None:
            codes = ops.take(self.feature_table, user, axis=0)
            for column, embedding in enumerate(self.feature_embeddings):
                code = codes[:, column]
                parts.append(embedding(code) * ops.cast(ops.expand_dims(code > 0, -1), self.compute_dtype))
        return unit_length(self.combine(ops.concatenate(parts, axis=-1)))

    def compute_output_shape(self, user_shape, history_shape=None):
        return (user_shape[0], self.embedding_dim)


class TwoTowerModel(keras.Model):
    """The two towers, trained with a softmax over mixed negatives.

    Inputs are dicts of `user [B]`, `history [B, H]` and `item [B]` (the
    positive item); `call` returns `{"user": [B, D], "item": [B, D]}`. The
    loss scores every user against every positive item in the batch and
    against `sampled_negatives` items drawn uniformly from the catalogue,
    divided by a learnable temperature, with the user's own positive as the
    target. With logQ correction every candidate's logit is lowered by the
    log of its expected count among the candidates (`B·P(item)` in the
    batch, `sampled_negatives / num_items` for the uniform draws), so
    popular items are not pushed down for being frequent negatives.

    Args:
        item_tower: an `ItemTower`.
        user_tower: a `UserTower`.
        temperature: the initial softmax temperature (learned, kept in
            [0.01, 1]).
        remove_accidental_hits: mask in-batch negatives that are the
            user's own positive item (the same item twice in a batch).
        item_log_probabilities: `log P(item sampled)` per item number
            (index 0 unused) for the logQ correction, or `None`.
        sampled_negatives: uniformly drawn negatives added to the
            in-batch ones each step (0: in-batch only).
        seed: the seed of the negative sampler.

    Under a distribution strategy, build it in the strategy's scope before
    `fit` (`model.build({"user": (None,), "history": (None, H), "item":
    (None,)})`): Keras' automatic build from a distributed batch feeds the
    towers float tensors.

    Example:
    >>> model = TwoTowerModel(ItemTower(features, None, 64), UserTower(300, 64))
    >>> model.compile(optimizer=keras.optimizers.Adam(1e-3))
    >>> model.fit(tf.data.Dataset.from_tensor_slices(examples).batch(128))
    """

    def __init__(self, item_tower, user_tower, temperature=0.1, remove_accidental_hits=True,
                 item_log_probabilities=None, sampled_negatives=0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not 0.01 <= temperature <= 1.0:
            raise ValueError(f"`temperature` must be in [0.01, 1], received {temperature!r}.")
        self.item_tower = item_tower
        self.user_tower = user_tower
        self.remove_accidental_hits = remove_accidental_hits
        self.log_temperature = self.add_weight(shape=(), initializer=keras.initializers.Constant(math.log(temperature)),
                                               name="log_temperature")
        self.item_log_probabilities = None
        if item_log_probabilities is not None:
            self.item_log_probabilities = self.add_weight(
                shape=np.shape(item_log_probabilities), trainable=False, name="item_log_probabilities",
                initializer=keras.initializers.Constant(np.asarray(item_log_probabilities, np.float32)))
        if sampled_negatives < 0:
            raise ValueError(f"`sampled_negatives` must be >= 0, received {sampled_negatives!r}.")
        self.sampled_negatives = sampled_negatives
        self.sampler = keras.random.SeedGenerator(seed)
        self.logq = keras_rs.layers.SamplingProbabilityCorrection(epsilon=1e-12)
        self.softmax_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def build(self, input_shape):
        self.item_tower.build(input_shape["item"])
        self.user_tower.build(input_shape["user"], None)

    def call(self, inputs, training=None):
        # `training` is taken so Keras' `train_step` passes it on (the item
        # tower's id dropout acts in training only).
        return {"user": self.embed_users(inputs["user"], inputs["history"], training),
                "item": self.item_tower(inputs["item"], training=training)}

    def embed_users(self, user, history, training=None):
        """User embeddings from user numbers and recent item numbers."""
        return self.user_tower(user, self.item_tower(history, training=training))

    @property
    def temperature(self):
        return ops.clip(ops.exp(self.log_temperature), 0.01, 1.0)

    def candidate_logits(self, x, y_pred, training=False):
        """The `[B, B + sampled_negatives]` logits of every user against the
        batch positives and the sampled items, with accidental hits masked
        and the logQ correction applied."""
        items = x["item"]
        candidates, embeddings = items, y_pred["item"]
        if self.sampled_negatives:
            sampled = keras.random.randint((self.sampled_negatives,), 1, self.item_tower.num_items + 1,
                                           seed=self.sampler, dtype="int32")
            candidates = ops.concatenate([items, sampled])
            embeddings = ops.concatenate([embeddings, self.item_tower(sampled, training=training)])
        logits = ops.matmul(y_pred["user"], ops.transpose(embeddings)) / self.temperature
        if self.remove_accidental_hits:
            # keras_rs.layers.RemoveAccidentalHits (0.4.0) adds a tiny
            # positive number instead of a large negative one, so it masks
            # nothing; the duplicates are masked here.
            same_item = ops.equal(ops.expand_dims(items, 1), ops.expand_dims(candidates, 0))
            own = ops.equal(ops.expand_dims(ops.arange(ops.shape(items)[0]), 1),
                            ops.expand_dims(ops.arange(ops.shape(candidates)[0]), 0))
            logits = ops.where(ops.logical_and(same_item, ops.logical_not(own)), ops.cast(-1e9, logits.dtype), logits)
        if self.item_log_probabilities is not None:
            # Expected counts among the candidates, as shares of them (so
            # each is <= 1, as the keras-rs layer clips): B·P(item) for the
            # batch positives, sampled / num_items for each uniform draw.
            batch = ops.cast(ops.shape(items)[0], "float32")
            total = batch + self.sampled_negatives
            probabilities = ops.exp(ops.take(self.item_log_probabilities, items, axis=0)) * batch / total
            if self.sampled_negatives:
                uniform = self.sampled_negatives / (self.item_tower.num_items * total)
                probabilities = ops.concatenate(
                    [probabilities, ops.full((self.sampled_negatives,), uniform, dtype=probabilities.dtype)])
            logits = self.logq(logits, ops.broadcast_to(ops.expand_dims(probabilities, 0), ops.shape(logits)))
        return logits

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        logits = self.candidate_logits(x, y_pred, training)
        labels = ops.arange(ops.shape(logits)[0])
        # Keras' loss divides by the replica count under a distribution
        # strategy (replica gradients are summed), like a compiled loss.
        return self.softmax_loss(labels, logits, sample_weight)


def item_log_probabilities(train_items, num_items):
    """`log P(item)` under in-batch sampling, estimated from how often each
    item occurs among training positives (unseen items get the smallest
    observed probability). Index 0 is padding."""
    counts = np.bincount(train_items, minlength=num_items + 1).astype(np.float64)[: num_items + 1]
    counts[0] = 0
    floor = counts[counts > 0].min()
    probabilities = np.where(counts > 0, counts, floor) / counts.sum()
    return np.log(probabilities).astype(np.float32)
