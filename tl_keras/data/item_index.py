"""Item indexes: item ids and their embedding vectors, written in shards by
`tl-keras embed-catalogue` and read back into one matrix.

An index version is a folder `<base>/<version>/` holding
`items-SSSSS-of-NNNNN.tfrecord` (one `tf.train.Example` an item: `id`
bytes, `embedding` floats) and `index.json` (the number of items, their
dimension, and the model version that embedded them). Versions are numbered
like exports, and a version folder appears whole or not at all.

Example:
>>> item_ids, vectors = read_item_index("indexes/new_products")   # the newest version
>>> vectors.shape
(1000000, 64)
"""

import json
import pathlib

import numpy as np

INDEX_FILE = "index.json"
SHARDS = "items"


def index_version(base, version=None):
    """The folder of an index's `version` (the newest if `None`)."""
    base = pathlib.Path(base)
    versions = sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()) if base.is_dir() else []
    if not versions:
        raise ValueError(f"{base}: no index version inside (write one with `tl-keras embed-catalogue`).")
    if version is None:
        version = versions[-1]
    if version not in versions:
        raise ValueError(f"{base}: no index version {version!r} (has {versions}).")
    return base / str(version)


def read_item_index(base, version=None):
    """`(item_ids, vectors)` of an index version, read shard by shard into
    one float32 `[items, dimension]` matrix; an id written twice raises
    `ValueError` naming it."""
    import tensorflow as tf

    folder = index_version(base, version)
    facts = json.loads((folder / INDEX_FILE).read_text())
    count, dimension = facts["items"], facts["dimension"]
    vectors = np.zeros((count, dimension), np.float32)
    item_ids = []
    spec = {"id": tf.io.FixedLenFeature([], tf.string), "embedding": tf.io.FixedLenFeature([dimension], tf.float32)}
    files = sorted(str(path) for path in folder.glob(f"{SHARDS}-*.tfrecord"))
    records = tf.data.TFRecordDataset(files).batch(4096).map(lambda rows: tf.io.parse_example(rows, spec))
    for batch in records.as_numpy_iterator():
        start = len(item_ids)
        if start + len(batch["id"]) > count:
            raise ValueError(f"{folder}: more items in the shards than {INDEX_FILE}'s {count}.")
        vectors[start:start + len(batch["id"])] = batch["embedding"]
        item_ids.extend(value.decode("utf-8") for value in batch["id"])
    if len(item_ids) != count:
        raise ValueError(f"{folder}: {len(item_ids)} items in the shards, {INDEX_FILE} says {count}.")
    if len(set(item_ids)) != count:
        seen, twice = set(), None
        for item_id in item_ids:
            if item_id in seen:
                twice = item_id
                break
            seen.add(item_id)
        raise ValueError(f"{folder}: item id {twice!r} is in the index more than once.")
    return item_ids, vectors
