"""Reading recommendation data: an item catalogue, user–item interactions and
optional user features, and the time-ordered split used to evaluate them.

Files are CSV with a header row:
- items: `item_id,text` (title plus description or categories);
- interactions: `user_id,item_id[,timestamp][,rating]`;
- users (optional): `user_id,<feature>,...`, every feature categorical.

Every error names the file and line, and nothing is dropped silently.
Internally items and users are numbered from 1; 0 means "none" (padding, an
unknown user, an item without a learned id).
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from tl_keras.data.texts import DataError, csv_records


@dataclasses.dataclass
class Catalog:
    """The items: ids and texts in file order; item `i` (0-based here) is
    numbered `i + 1` in the models."""

    item_ids: list
    texts: list

    def __post_init__(self):
        self.index = {item_id: number for number, item_id in enumerate(self.item_ids, start=1)}

    def __len__(self):
        return len(self.item_ids)


@dataclasses.dataclass
class Interactions:
    """Interactions as parallel arrays: user and item numbers (from 1),
    timestamps (file order when the file has none), ratings (1.0 when none)
    and the `file:line` each came from."""

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    ratings: np.ndarray
    origins: list

    def __len__(self):
        return len(self.users)

    def subset(self, rows):
        rows = np.asarray(rows, dtype=np.int64)
        return Interactions(self.users[rows], self.items[rows], self.timestamps[rows], self.ratings[rows],
                            [self.origins[i] for i in rows])


@dataclasses.dataclass
class Users:
    """User ids (numbered from 1 in file order of first appearance) and, per
    user, categorical feature codes (`features[user]`, 0 = unknown value)."""

    user_ids: list
    feature_names: list = dataclasses.field(default_factory=list)
    feature_vocabularies: list = dataclasses.field(default_factory=list)
    features: np.ndarray = None

    def __post_init__(self):
        self.index = {user_id: number for number, user_id in enumerate(self.user_ids, start=1)}
        if self.features is None:
            self.features = np.zeros((len(self.user_ids) + 1, 0), np.int32)

    def __len__(self):
        return len(self.user_ids)


def read_items(path):
    """Reads an `item_id,text` CSV into a `Catalog`.

    Example:
    >>> catalog = read_items("items.csv")
    >>> catalog.texts[catalog.index["sku-42"] - 1]
    'steel kettle, kitchen'
    """
    item_ids, texts, first_seen = [], [], {}
    for origin, record in csv_records(path, ["item_id", "text"]):
        item_id, text = (record["item_id"] or "").strip(), (record["text"] or "").strip()
        if not item_id:
            raise DataError(f"{origin}: empty item_id.")
        if item_id in first_seen:
            raise DataError(f"{origin}: duplicate item_id {item_id!r} (first at {first_seen[item_id]}).")
        if not text:
            raise DataError(f"{origin}: item {item_id!r} has an empty text.")
        first_seen[item_id] = origin
        item_ids.append(item_id)
        texts.append(text)
    if not item_ids:
        raise DataError(f"{path}: no items.")
    return Catalog(item_ids, texts)


def _number(value, column, origin):
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise DataError(f"{origin}: {column} must be a finite number, received {value!r}.")
    return number


def read_interactions(path, catalog, users=None):
    """Reads a `user_id,item_id[,timestamp][,rating]` CSV.

    Args:
        path: the interactions file.
        catalog: the `Catalog`; an item id it lacks is an error.
        users: a `Users` from `read_users`; users it lacks are added after
            its own. `None` numbers users in order of first appearance.

    Returns:
        `(interactions, users)`.

    Example:
    >>> interactions, users = read_interactions("clicks.csv", catalog)
    """
    user_ids = list(users.user_ids) if users else []
    user_index = {user_id: number for number, user_id in enumerate(user_ids, start=1)}
    rows = []
    for line, (origin, record) in enumerate(csv_records(path, ["user_id", "item_id"])):
        user_id, item_id = (record["user_id"] or "").strip(), (record["item_id"] or "").strip()
        if not user_id:
            raise DataError(f"{origin}: empty user_id.")
        if item_id not in catalog.index:
            raise DataError(f"{origin}: unknown item_id {item_id!r}; it is not in the items file.")
        if user_id not in user_index:
            user_ids.append(user_id)
            user_index[user_id] = len(user_ids)
        timestamp = _number(record["timestamp"], "timestamp", origin) if record.get("timestamp") else line
        rating = _number(record["rating"], "rating", origin) if record.get("rating") else 1.0
        rows.append((user_index[user_id], catalog.index[item_id], timestamp, rating, origin))
    if not rows:
        raise DataError(f"{path}: no interactions.")
    user_numbers, items, timestamps, ratings, origins = zip(*rows)
    interactions = Interactions(np.array(user_numbers, np.int32), np.array(items, np.int32),
                                np.array(timestamps, np.float64), np.array(ratings, np.float32), list(origins))
    if users is None:
        users = Users(user_ids)
    else:
        extra = np.zeros((len(user_ids) - len(users), users.features.shape[1]), np.int32)
        users = Users(user_ids, users.feature_names, users.feature_vocabularies,
                      np.concatenate([users.features, extra]))
    return interactions, users


def read_users(path):
    """Reads a `user_id,<feature>,...` CSV of categorical user features; each
    feature's values are numbered from 1 in order of appearance.

    Example:
    >>> users = read_users("users.csv")
    >>> users.feature_names
    ['country', 'age_band']
    """
    user_ids, codes, first_seen = [], [], {}
    feature_names, vocabularies = None, None
    for origin, record in csv_records(path, ["user_id"]):
        if feature_names is None:
            feature_names = [name for name in record if name != "user_id"]
            vocabularies = [{} for _ in feature_names]
        user_id = (record["user_id"] or "").strip()
        if not user_id:
            raise DataError(f"{origin}: empty user_id.")
        if user_id in first_seen:
            raise DataError(f"{origin}: duplicate user_id {user_id!r} (first at {first_seen[user_id]}).")
        first_seen[user_id] = origin
        row = []
        for name, vocabulary in zip(feature_names, vocabularies):
            value = (record[name] or "").strip()
            row.append(vocabulary.setdefault(value, len(vocabulary) + 1) if value else 0)
        user_ids.append(user_id)
        codes.append(row)
    if not user_ids:
        raise DataError(f"{path}: no users.")
    features = np.zeros((len(user_ids) + 1, len(feature_names)), np.int32)
    features[1:] = np.array(codes, np.int32).reshape(len(user_ids), len(feature_names))
    return Users(user_ids, feature_names, [list(v) for v in vocabularies], features)


@dataclasses.dataclass
class TimeSplit:
    """A time-ordered split: each user's last interactions are held out.

    `cold_items` are the item numbers that occur in `test` but never in
    `train` (they have no interaction history to learn from)."""

    train: Interactions
    test: Interactions
    cold_items: np.ndarray


def time_ordered_split(interactions, holdout=1, min_train=1):
    """Holds out each user's `holdout` most recent interactions.

    Users with fewer than `holdout + min_train` interactions stay entirely in
    training. Ties in time keep file order.

    Example:
    >>> split = time_ordered_split(interactions, holdout=2)
    >>> len(split.cold_items)
    60
    """
    if holdout < 1:
        raise ValueError(f"`holdout` must be >= 1, received {holdout!r}.")
    order = np.lexsort((np.arange(len(interactions)), interactions.timestamps, interactions.users))
    is_test = np.zeros(len(order), bool)
    for _, start, end in user_runs(interactions.users[order]):
        if end - start >= holdout + min_train:
            is_test[end - holdout:end] = True
    train, test = interactions.subset(order[~is_test]), interactions.subset(order[is_test])
    cold = np.setdiff1d(np.unique(test.items), np.unique(train.items))
    return TimeSplit(train, test, cold)


@dataclasses.dataclass
class ColdStartSplit:
    """Two cold-start test sets over one training set.

    `new_items` tests items never seen in training: a random share of the
    catalogue whose every interaction was moved out of training (its users
    otherwise warm). `new_users` tests users who kept only their first
    `keep` interactions in training: their last `holdout` are the test."""

    new_items: TimeSplit
    new_users: TimeSplit


def cold_start_split(interactions, item_fraction=0.15, user_fraction=0.1, keep=2, holdout=2, seed=0):
    """Builds the item- and user-cold-start split.

    A random `item_fraction` of the items that occur in `interactions`
    become new items: all their interactions leave training and, for users
    who are not new, are the item-cold-start test. A random `user_fraction`
    of the users with at least `keep + holdout` interactions of other items
    become new users: their first `keep` stay in training, their last
    `holdout` are the user-cold-start test, the ones between are dropped.

    Example:
    >>> cold = cold_start_split(interactions, item_fraction=0.15, user_fraction=0.1)
    >>> len(cold.new_items.cold_items), len(user_runs(cold.new_users.test.users))
    (252, 94)
    """
    for name, value in (("item_fraction", item_fraction), ("user_fraction", user_fraction)):
        if not 0 < value < 1:
            raise ValueError(f"`{name}` must be in (0, 1), received {value!r}.")
    if keep < 1 or holdout < 1:
        raise ValueError(f"`keep` and `holdout` must be >= 1, received {keep!r} and {holdout!r}.")
    rng = np.random.default_rng(seed)
    present = np.unique(interactions.items)
    new_items = np.sort(rng.choice(present, max(1, int(round(item_fraction * len(present)))), replace=False))
    order = np.lexsort((np.arange(len(interactions)), interactions.timestamps, interactions.users))
    ordered = interactions.subset(order)
    is_new_item = np.isin(ordered.items, new_items)
    warm = ordered.subset(np.flatnonzero(~is_new_item))
    runs = user_runs(warm.users)
    eligible = [user for user, start, end in runs if end - start >= keep + holdout]
    new_users = rng.choice(eligible, max(1, int(round(user_fraction * len(eligible)))), replace=False) \
        if eligible else np.zeros(0, np.int32)
    new_user = set(np.asarray(new_users).tolist())
    train_rows, user_test_rows = [], []
    for user, start, end in runs:
        if user in new_user:
            train_rows.extend(range(start, start + keep))
            user_test_rows.extend(range(end - holdout, end))
        else:
            train_rows.extend(range(start, end))
    train = warm.subset(train_rows)
    item_test = ordered.subset(np.flatnonzero(is_new_item & ~np.isin(ordered.users, list(new_user))))
    return ColdStartSplit(TimeSplit(train, item_test, new_items),
                          TimeSplit(train, warm.subset(user_test_rows), np.zeros(0, np.int32)))


def user_runs(users):
    """`(user, start, end)` for each run of equal user numbers in `users`:
    one a user when rows are grouped by user, as `time_ordered_split` leaves
    them. One pass, however many users."""
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    return [(int(users[start]), start, end) for start, end in zip(starts, ends)]


def pack_recent(items, length):
    """Each row's last `length` item numbers (0s dropped wherever they are),
    most recent last, left-padded with 0: an int32 `[rows, length]` tensor.
    The one packing of recent items that training, `Recommender` and the
    retrieval SavedModel share, so served and in-process scores agree.

    Args:
        items: a `tf.RaggedTensor`, or a dense int `[rows, n]` tensor, of
            item numbers in time order (0 is padding).
        length: the user tower's history length.

    Example:
    >>> pack_recent(tf.ragged.constant([[4, 0, 7], [3]]), 3).numpy().tolist()
    [[0, 4, 7], [0, 0, 3]]
    """
    if not isinstance(items, tf.RaggedTensor):
        items = tf.RaggedTensor.from_tensor(tf.convert_to_tensor(items))
    items = tf.cast(items, tf.int32)
    items = tf.ragged.boolean_mask(items, items > 0)[:, -length:]
    right_padded = items.to_tensor(default_value=0, shape=[None, length])
    # Column j of a row of n items holds its item j - (length - n).
    source = tf.range(length)[None, :] - (length - tf.cast(items.row_lengths(), tf.int32))[:, None]
    return tf.where(source >= 0, tf.gather(right_padded, tf.maximum(source, 0), batch_dims=1), 0)


def histories(interactions, num_users, length):
    """Each user's `length` most recent items in `interactions` (grouped by
    user and in time order, as `time_ordered_split` leaves them), most
    recent last, left-padded with 0 (`pack_recent`): an int32 array
    `[num_users + 1, length]`."""
    rows = [np.zeros(0, np.int64)] * (num_users + 1)
    for user, start, end in user_runs(interactions.users):
        rows[user] = interactions.items[max(start, end - length):end]
    return pack_recent(ragged_rows(rows), length).numpy()


def ragged_rows(rows):
    """A `tf.RaggedTensor` of int64 rows from a list of 1-D arrays."""
    lengths = [len(row) for row in rows]
    values = np.concatenate([np.asarray(row, np.int64) for row in rows]) if rows else np.zeros(0, np.int64)
    return tf.RaggedTensor.from_row_lengths(values, np.asarray(lengths, np.int64))


def sequential_examples(interactions, length):
    """Training examples from time-ordered interactions: for each interaction,
    the user, the `length` items they interacted with just before it
    (left-padded with 0, `pack_recent`) and the item itself.

    Returns:
        A dict of int32 arrays `user [n]`, `history [n, length]`, `item [n]`.
    """
    windows = []
    for _, start, end in user_runs(interactions.users):
        windows += [interactions.items[max(start, row - length):row] for row in range(start, end)]
    return {"user": interactions.users.astype(np.int32), "history": pack_recent(ragged_rows(windows), length).numpy(),
            "item": interactions.items.astype(np.int32)}
