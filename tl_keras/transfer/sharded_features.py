"""Frozen-encoder features of a corpus larger than memory, in shards on
disk, read memory-mapped: the `frozen` strategy's feature cache for
streamed data (`FeatureCache` holds one array in memory).

Rows stream in (`tl_keras.data.streams`), are tokenised and encoded a chunk
at a time (in length order, as `FeatureCache` does), and written as
`features-SSSSS.npy` / `targets-SSSSS.npy` pairs; `manifest.json`, written
last, names the shards and the key (the encoder's fingerprint and the input
files' names, sizes and times), so a folder whose manifest has the same key
is reused and a half-written one never is.

Example:
>>> features = ShardedFeatures.write(classifier.encoder, classifier.preprocessor, rows, "runs/features",
...                                  targets_of=classifier.targets)
>>> classifier.fit_features(features, batch_size=256, epochs=3)
"""

import hashlib
import json
import os
import pathlib
import shutil
import uuid

import numpy as np
import tensorflow as tf

from tl_keras.core.files import write_atomically
from tl_keras.core.progress import progress_bar
from tl_keras.data.tokens import length_ordered_runner, predict_in_length_order, tokenize
from tl_keras.transfer.feature_cache import fingerprint

MANIFEST = "manifest.json"


def stream_key(encoder, files):
    """The key of a stream's features: the encoder's fingerprint and each
    input file's path, size and modification time."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(fingerprint(encoder, _NoInputs()).encode())
    for path in files:
        status = os.stat(path)
        digest.update(f"{os.path.abspath(path)}\0{status.st_size}\0{status.st_mtime_ns}\0".encode())
    return digest.hexdigest()


class _NoInputs:
    arrays = {}


class ShardedFeatures:
    """The shards of one stream's features, memory-mapped.

    Args:
        folder: a folder `ShardedFeatures.write` filled.
    """

    def __init__(self, folder):
        self.folder = pathlib.Path(folder)
        manifest = json.loads((self.folder / MANIFEST).read_text())
        self.key, self.dimension, self.shards = manifest["key"], manifest["dimension"], manifest["shards"]

    def __len__(self):
        return sum(shard["rows"] for shard in self.shards)

    def shard(self, number):
        """`(features, targets)` of shard `number`, memory-mapped."""
        entry = self.shards[number]
        return (np.load(self.folder / entry["features"], mmap_mode="r"),
                np.load(self.folder / entry["targets"], mmap_mode="r"))

    def dataset(self, batch_size, shuffle=False, seed=None):
        """A `tf.data.Dataset` of `(features, targets)` batches, a shard at
        a time (shuffled: shards in a new order each epoch, rows shuffled
        within each), never more than one shard's batch in memory."""
        rng = np.random.default_rng(seed)
        feature_dtype = tf.float32

        def batches():
            order = rng.permutation(len(self.shards)) if shuffle else range(len(self.shards))
            for number in order:
                features, targets = self.shard(int(number))
                rows = rng.permutation(len(targets)) if shuffle else np.arange(len(targets))
                for start in range(0, len(rows), batch_size):
                    chosen = np.sort(rows[start:start + batch_size])  # Sorted: mmap reads in file order.
                    yield np.asarray(features[chosen], np.float32), np.asarray(targets[chosen])

        targets_spec = tf.TensorSpec([None], tf.as_dtype(self.shard(0)[1].dtype)) if self.shards else \
            tf.TensorSpec([None], tf.int32)
        count = sum(-(-shard["rows"] // batch_size) for shard in self.shards)  # So Keras knows an epoch's end.
        return tf.data.Dataset.from_generator(batches, output_signature=(
            tf.TensorSpec([None, self.dimension], feature_dtype), targets_spec)).apply(
            tf.data.experimental.assert_cardinality(count)).prefetch(2)

    @classmethod
    def write(cls, encoder, preprocessor, rows, folder, targets_of, shard_rows=65_536, chunk_rows=8_192,
              batch_size=64, verbose=1):
        """Encodes a stream of `(text, label, origin)` rows into shards, or
        returns the folder's shards when their key matches.

        Args:
            encoder: the frozen encoder (token inputs to pooled features).
            preprocessor: its KerasHub text preprocessor.
            rows: a `LabelledTextStream` (its `files` make the key).
            folder: where the shards go.
            targets_of: labels and origins to targets (a task's `targets`).
            shard_rows: rows a shard holds.
            chunk_rows: rows tokenised and encoded at a time.
            batch_size: rows an encoder call takes.
            verbose: 1 shows a progress bar.

        Returns:
            A `ShardedFeatures`.
        """
        folder = pathlib.Path(folder)
        key = stream_key(encoder, rows.files)
        if (folder / MANIFEST).is_file() and json.loads((folder / MANIFEST).read_text()).get("key") == key:
            return cls(folder)
        staging = folder.parent / f".{folder.name}.staging-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            shards, dimension = _encode(encoder, preprocessor, rows, staging, targets_of, shard_rows, chunk_rows,
                                        batch_size, verbose)
            write_atomically(staging / MANIFEST, json.dumps({"key": key, "dimension": dimension, "shards": shards,
                                                             "files": rows.files}, indent=1) + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            os.rename(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls(folder)


def _encode(encoder, preprocessor, rows, folder, targets_of, shard_rows, chunk_rows, batch_size, verbose):
    progress = progress_bar(None, "caching backbone features", "text", verbose)
    runs = []  # One traced function for every chunk, made with the first.
    shards, features, targets, dimension = [], [], [], 0

    def flush():
        number = len(shards)
        names = {"features": f"features-{number:05d}.npy", "targets": f"targets-{number:05d}.npy"}
        np.save(folder / names["features"], np.concatenate(features))
        np.save(folder / names["targets"], np.concatenate(targets))
        shards.append({**names, "rows": int(sum(len(t) for t in targets))})
        features.clear()
        targets.clear()

    def encode(chunk):
        tokens = tokenize([text for text, _, _ in chunk], preprocessor, verbose=0)
        if not runs:
            runs.append(length_ordered_runner(encoder, tokens.arrays))
        features.append(predict_in_length_order(encoder, tokens, batch_size, run=runs[0]).astype(np.float32))
        targets.append(np.asarray(targets_of([label for _, label, _ in chunk], [origin for _, _, origin in chunk])))
        progress.add(len(chunk))
        return features[-1].shape[1]

    chunk, held = [], 0
    for row in rows:
        chunk.append(row)
        if len(chunk) == chunk_rows:
            dimension = encode(chunk)
            held += len(chunk)
            chunk = []
            if held >= shard_rows:
                flush()
                held = 0
    if chunk:
        dimension = encode(chunk)
    if features:
        flush()
    return shards, dimension
