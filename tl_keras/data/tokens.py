"""Tokenising once and batching token ids with as little padding as possible.

Texts are tokenised a single time by the backbone's own preprocessor (the same
layer the exported serving graph uses) and kept as padded numpy arrays. Every
batch is then cut to its longest real sequence rounded up to a bucket boundary
(a multiple of `BUCKET_STEP`), so a batch of short reviews costs what short
reviews cost, and the training function only ever sees a few shapes.
"""

import dataclasses
from functools import partial
import hashlib
import json
import pathlib

import numpy as np
import tensorflow as tf

from tl_keras.core.files import load_arrays, save_arrays
from tl_keras.core.progress import progress_bar

BUCKET_STEP = 16
WINDOW_BATCHES = 16


@dataclasses.dataclass
class TokenizedTexts:
    """Token arrays (`{input_name: int32 [N, sequence_length]}`) and the number
    of real tokens of each row."""

    arrays: dict
    lengths: np.ndarray
    cacheable = True  # Frozen-backbone features of the same tokens never change.

    def __len__(self):
        return len(self.lengths)

    @property
    def sequence_length(self):
        return next(iter(self.arrays.values())).shape[1]

    def take(self, indices):
        """Returns the rows at `indices`."""
        return TokenizedTexts(
            {name: array[indices] for name, array in self.arrays.items()},
            self.lengths[indices],
        )

    def head_and_tail(self, sequence_length, head):
        """The rows cut to `sequence_length` tokens: a row longer than that
        keeps its first `head` tokens and its last `sequence_length - head`
        (the closing `[SEP]` among them); shorter rows are only cut.
        `head = sequence_length - 1` is the preprocessor's own truncation
        of single texts (the first tokens, then `[SEP]`).

        Example:
        >>> tokenize(reviews, preprocessor_512).head_and_tail(256, head=64)
        """
        if not 0 < head < sequence_length <= self.sequence_length:
            raise ValueError(f"Need 0 < head < sequence_length <= {self.sequence_length}, received "
                             f"head={head!r}, sequence_length={sequence_length!r}.")
        positions = np.broadcast_to(np.arange(sequence_length), (len(self), sequence_length))
        long = (self.lengths > sequence_length)[:, None]
        # Past the head, a long row's positions jump to its last tokens.
        tail_start = (self.lengths - sequence_length)[:, None]
        positions = np.where(long & (positions >= head), positions + tail_start, positions)
        return TokenizedTexts(
            {name: np.take_along_axis(array, positions, axis=1) for name, array in self.arrays.items()},
            np.minimum(self.lengths, sequence_length).astype("int32"),
        )

    def dataset(self, targets=None, batch_size=32, shuffle=False, seed=None, training=False):
        """The rows as a `tf.data` pipeline (see `make_dataset`); `training`
        changes nothing for texts."""
        return make_dataset(self, targets, batch_size, shuffle, seed)

    def predict(self, model, batch_size=64, verbose=0, description="predicting"):
        """`model`'s outputs for the rows (see `predict_in_length_order`)."""
        return predict_in_length_order(model, self, batch_size, verbose, description)


def tokenize(texts, preprocessor, batch_size=512, verbose=1, cache_dir=None):
    """Tokenises `texts` once with `preprocessor`, in a `tf.data` pipeline.

    Args:
        texts: a list of strings, or of `(text, text_pair)` tuples, which
            the preprocessor packs as one sequence (`[CLS] text [SEP]
            text_pair [SEP]` for BERT, with segment ids).
        preprocessor: a KerasHub `TextClassifierPreprocessor`.
        batch_size: texts tokenised at a time.
        verbose: 1 shows a progress bar.
        cache_dir: a folder to keep the token ids in (`<key>.npz`, keyed by
            the texts, the preprocessor's configuration and its vocabulary),
            so a later run over the same data skips tokenising; `None`
            keeps them in memory only.

    Example:
    >>> tokens = tokenize(["great phone", "broke in a week"], preprocessor)
    >>> tokens.lengths
    array([4, 6], dtype=int32)
    """
    texts = list(texts)
    key = _token_key(texts, preprocessor)
    path = pathlib.Path(cache_dir) / f"{key}.npz" if cache_dir else None
    arrays = load_arrays(path, key) if path is not None else None
    if arrays is not None:
        return TokenizedTexts(arrays, arrays["padding_mask"].sum(axis=1).astype("int32"))
    if is_pairs(texts):
        columns = tuple(tf.constant([text[part] for text in texts], tf.string) for part in (0, 1))
        dataset = tf.data.Dataset.from_tensor_slices(columns).batch(batch_size).map(
            lambda first, second: preprocessor(x=(first, second)), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        dataset = (
            tf.data.Dataset.from_tensor_slices(tf.constant(texts, tf.string))
            .batch(batch_size)
            .map(preprocessor, num_parallel_calls=tf.data.AUTOTUNE)
        )
    progress = progress_bar(len(texts), "tokenising", "text pair" if is_pairs(texts) else "text", verbose)
    chunks = []
    for batch in dataset:
        chunks.append({name: tensor.numpy() for name, tensor in batch.items()})
        progress.add(len(chunks[-1]["padding_mask"]))
    arrays = {
        name: np.concatenate([chunk[name] for chunk in chunks]).astype("int32")
        for name in chunks[0]
    }
    if path is not None:
        save_arrays(path, key, arrays)
    return TokenizedTexts(arrays, arrays["padding_mask"].sum(axis=1).astype("int32"))


def is_pairs(texts):
    """True if `texts` are `(text, text_pair)` tuples rather than strings."""
    return bool(texts) and isinstance(texts[0], tuple)


def _token_key(texts, preprocessor):
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(preprocessor.get_config(), sort_keys=True, default=str).encode())
    digest.update("\n".join(preprocessor.tokenizer.get_vocabulary()).encode())
    for text in texts:
        digest.update(b"\1".join(part.encode() for part in text) if isinstance(text, tuple) else text.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def bucket_width(max_length, sequence_length, step=BUCKET_STEP):
    """Rounds `max_length` up to a multiple of `step`, capped at
    `sequence_length`. Works on Python ints and tensors alike."""
    return tf.minimum((max_length + step - 1) // step * step, sequence_length)


def trim_to_bucket(inputs, sequence_length, step=BUCKET_STEP):
    """Cuts a batch of padded token tensors to its longest real sequence,
    rounded up to a bucket boundary. Used in training pipelines and inside the
    exported serving graph alike; the result is unchanged for the model
    because the removed columns are padding only."""
    longest = tf.reduce_max(
        tf.reduce_sum(tf.cast(inputs["padding_mask"], tf.int32), axis=1)
    )
    width = bucket_width(longest, sequence_length, step)
    return {name: tensor[:, :width] for name, tensor in inputs.items()}


def make_dataset(tokens, targets=None, batch_size=32, shuffle=False, seed=None):
    """Builds a `tf.data.Dataset` of length-bucketed batches.

    With `shuffle=True` (training) the rows are reshuffled every epoch, cut
    into windows of `WINDOW_BATCHES` batches, sorted by length within each
    window, batched, and the batches shuffled again: every epoch mixes
    different examples, yet each batch holds texts of similar length. With
    `shuffle=False` the order is kept. Either way each batch is cut to
    `bucket_width` of its longest text, so the padded widths are multiples
    of `BUCKET_STEP` only. The dataset always has `ceil(rows / batch_size)`
    batches, a known cardinality, so Keras shows whole-epoch progress bars.

    Args:
        tokens: a `TokenizedTexts`.
        targets: a numpy array of targets, or `None` for inputs only.
        batch_size: examples a batch (the global batch under a distribution
            strategy).
        shuffle: reshuffle and sort within windows each epoch.
        seed: the shuffle seed.

    Example:
    >>> model.fit(make_dataset(tokens, targets, 16, shuffle=True), epochs=3)
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be an integer >= 1, received {batch_size!r}.")
    sequence_length = tokens.sequence_length
    elements = (dict(tokens.arrays),)
    if targets is not None:
        if len(targets) != len(tokens):
            raise ValueError(f"{len(tokens)} token rows but {len(targets)} targets.")
        elements += (np.asarray(targets),)
    dataset = tf.data.Dataset.from_tensor_slices(elements)
    if shuffle:
        def sort_and_batch(*window):
            order = tf.argsort(tf.reduce_sum(window[0]["padding_mask"], axis=1), stable=True)
            rows = tf.nest.map_structure(partial(tf.gather, indices=order), window)
            return tf.data.Dataset.from_tensor_slices(rows).batch(batch_size)

        dataset = (
            dataset.shuffle(len(tokens), seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size * WINDOW_BATCHES)
            .flat_map(sort_and_batch)
            .shuffle(WINDOW_BATCHES, seed=seed, reshuffle_each_iteration=True)
        )
    else:
        dataset = dataset.batch(batch_size)

    def trim(inputs, *rest):
        inputs = trim_to_bucket(inputs, sequence_length)
        return (inputs, *rest) if rest else inputs

    batches = -(-len(tokens) // batch_size)
    return (
        dataset.map(trim, num_parallel_calls=tf.data.AUTOTUNE)
        .apply(tf.data.experimental.assert_cardinality(batches))
        .prefetch(tf.data.AUTOTUNE)
    )


def length_ordered_runner(model, names):
    """`model` in inference mode as one `tf.function` over int32 token
    inputs `names` of any batch and width: traced once for every bucket
    width (Keras' `predict` traces a shape at a time)."""
    specs = {name: tf.TensorSpec([None, None], tf.int32, name=name) for name in names}

    @tf.function(input_signature=[specs])
    def run(inputs):
        return model(inputs, training=False)

    return run


def predict_in_length_order(model, tokens, batch_size=64, verbose=0, description="predicting", run=None):
    """Runs `model` in inference mode on rows sorted by length (little
    padding) and returns the outputs in the original row order, with a
    progress bar when `verbose` is 1; `run` (a `length_ordered_runner`)
    reuses one traced function across calls.
    """
    order = np.argsort(tokens.lengths, kind="stable")
    run = run or length_ordered_runner(model, tokens.arrays)

    progress = progress_bar(len(tokens), description, "text", verbose)
    outputs = []
    for batch in make_dataset(tokens.take(order), batch_size=batch_size):
        outputs.append(run(batch).numpy())
        progress.add(len(outputs[-1]))
    outputs = np.concatenate(outputs)
    result = np.empty_like(outputs)
    result[order] = outputs
    return result
