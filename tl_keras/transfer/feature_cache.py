"""The frozen-embedding cache: run a frozen encoder over the data once.

With the `frozen` strategy the encoder's output never changes, so training the
head on cached features gives the same result as running the backbone every
epoch, for a fraction of the cost. Entries are keyed by a fingerprint of the
encoder's weights and configuration and of the input arrays (token ids, which
carry the data and the sequence length, or pixels), so a change to any of
them misses the cache.
"""

import hashlib
import json
import pathlib

import numpy as np

from tl_keras.core.files import load_arrays, save_arrays


def _without_trainability(config):
    # Which layers train does not change what the encoder computes in inference.
    if isinstance(config, dict):
        return {key: _without_trainability(value) for key, value in config.items() if key != "trainable"}
    if isinstance(config, list):
        return [_without_trainability(value) for value in config]
    return config


def fingerprint(encoder, inputs):
    """Returns a hex digest of the encoder (config, without which layers
    train, and weights) and the inputs' arrays."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(_without_trainability(encoder.get_config()), sort_keys=True, default=str).encode())
    for weight in encoder.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    for name in sorted(inputs.arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(inputs.arrays[name]).tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Caches pooled encoder features in memory and, if `directory` is given,
    on disk as `<fingerprint>.npz` (with its key and a checksum, so an
    edited, truncated or misplaced file is detected, removed and recomputed).

    Args:
        directory: a folder for the on-disk cache, or `None`.

    Example:
    >>> cache = FeatureCache("runs/cache")
    >>> features = cache.features(model.encoder, tokens)
    """

    def __init__(self, directory=None):
        self.directory = pathlib.Path(directory) if directory else None
        self._memory = {}
        self.hits = 0
        self.misses = 0

    def features(self, encoder, inputs, batch_size=64, verbose=1):
        """Returns `encoder`'s features for `inputs` (`TokenizedTexts` or
        `ImageArray`), computing them (with a progress bar) only if this
        encoder and data were not seen before."""
        key = fingerprint(encoder, inputs)
        path = self.directory / f"{key}.npz" if self.directory else None
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        stored = load_arrays(path, key) if path is not None else None
        if stored is not None:
            self.hits += 1
            self._memory[key] = stored["features"]
            return self._memory[key]
        self.misses += 1
        features = inputs.predict(encoder, batch_size, verbose, description="caching backbone features")
        self._memory[key] = features
        if path is not None:
            save_arrays(path, key, {"features": features})
        return features
