"""Words tagged one tag each, for token classification (product attributes
in titles as BIO tags: `B-brand`, `I-brand`, `B-size`, `O`, ...): CoNLL-style
files, and whitespace words aligned with their word pieces.

A word is predicted at its first word piece; the other pieces, `[CLS]`,
`[SEP]` and padding carry the target -1 (ignored by the loss). The same TF
code (`WordPieceAligner`) tokenises for training, `predict` and the
SavedModel, so served tags are in-process tags.

Example:
>>> rows = read_tagged_words("titles.conll")
>>> aligner = WordPieceAligner(preprocessor.tokenizer, sequence_length=32)
>>> tokens = aligner.tokenize(rows.words)
"""

import dataclasses
import pathlib

import keras_hub
import numpy as np
import tensorflow as tf

from tl_keras.data.texts import DataError
from tl_keras.data.tokens import TokenizedTexts

IGNORED = -1  # The target of a position no tag is read at.


@dataclasses.dataclass
class TaggedWords:
    """Titles as words with one tag a word, and where each title came from."""

    words: list
    tags: list
    origins: list


def read_tagged_words(path):
    """Reads a CoNLL-style file: one `word<TAB>tag` (or `word tag`) a line,
    a blank line between titles. A line with another number of fields, an
    empty tag or a file with no title stops with the file, line and value.

    Example:
    >>> read_tagged_words("titles.conll").words[0]
    ['Acme', 'steel', 'kettle', '1.5L']
    """
    path = pathlib.Path(path)
    rows, words, tags, start = TaggedWords([], [], []), [], [], None
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error}).") from None
    for number, line in enumerate([*lines, ""], start=1):
        if not line.strip():
            if words:
                rows.words.append(words)
                rows.tags.append(tags)
                rows.origins.append(f"{path}:{start}")
            words, tags = [], []
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) != 2 or not fields[0].strip() or not fields[1].strip():
            raise DataError(f"{path}:{number}: expected `word<TAB>tag`, received {line!r}.")
        start = start if words else number
        words.append(fields[0].strip())
        tags.append(fields[1].strip())
    if not rows.words:
        raise DataError(f"{path}: no tagged title (one `word<TAB>tag` a line, a blank line between titles).")
    return rows


@dataclasses.dataclass
class AlignedTokens(TokenizedTexts):
    """`TokenizedTexts` of titles with, for each title, the position of each
    word's first word piece (`first_pieces`, int32 `[N, words]`, 0 for a
    word cut off by the sequence length or padding)."""

    first_pieces: np.ndarray = None
    cacheable = False  # Per-token outputs: nothing small to cache.

    def take(self, indices):
        rows = super().take(indices)
        return AlignedTokens(rows.arrays, rows.lengths, self.first_pieces[indices])


class WordPieceAligner(tf.Module):
    """Tokenises whitespace words with the backbone's WordPiece tokenizer and
    packs them as `[CLS] pieces [SEP]` (`keras_hub.layers.StartEndPacker`),
    keeping each word's first piece's position.

    Args:
        tokenizer: the backbone's KerasHub `WordPieceTokenizer`.
        sequence_length: token positions a title.
    """

    def __init__(self, tokenizer, sequence_length=64):
        super().__init__(name="word_piece_aligner")
        self.check_tokenizer(tokenizer)
        self.tokenizer, self.sequence_length = tokenizer, sequence_length
        self.packer = keras_hub.layers.StartEndPacker(
            sequence_length, start_value=tokenizer.token_to_id("[CLS]"), end_value=tokenizer.token_to_id("[SEP]"),
            pad_value=tokenizer.token_to_id("[PAD]"), return_padding_mask=True)
        # A graph function: in eager mode KerasHub's tokenizer returns lists.
        self.align = tf.function(self._align, input_signature=[
            tf.RaggedTensorSpec([None, None], tf.string, ragged_rank=1)])

    @staticmethod
    def check_tokenizer(tokenizer):
        """Refuses a tokenizer of another kind, naming it (no vocabulary
        needed)."""
        if not isinstance(tokenizer, keras_hub.tokenizers.WordPieceTokenizer):
            raise ValueError(f"Token classification needs a WordPiece (BERT-family) tokenizer, received "
                             f"{type(tokenizer).__name__}.")

    def __call__(self, words):
        """Token inputs and `first_pieces` (`[B, W]`) of a ragged `[B, W]`
        string tensor of words."""
        return self.align(words)

    def _align(self, words):
        pieces = self.tokenizer(words)
        if not isinstance(pieces, tf.RaggedTensor):
            pieces = tf.RaggedTensor.from_tensor(pieces)
        counts = tf.cast(pieces.row_lengths(axis=2), tf.int32).to_tensor()  # Pieces a word, [B, W].
        first = tf.math.cumsum(counts, axis=1, exclusive=True) + 1  # After [CLS].
        present = tf.sequence_mask(tf.cast(words.row_lengths(), tf.int32), tf.shape(counts)[1])
        kept = present & (counts > 0) & (first < self.sequence_length - 1)  # Room before [SEP].
        token_ids, padding_mask = self.packer(pieces.merge_dims(1, 2))
        return {"token_ids": tf.cast(token_ids, tf.int32), "padding_mask": tf.cast(padding_mask, tf.int32),
                "segment_ids": tf.zeros_like(tf.cast(token_ids, tf.int32)),
                "first_pieces": tf.where(kept, first, 0)}

    def tokenize(self, words, batch_size=256):
        """`AlignedTokens` of titles given as lists of words."""
        arrays, firsts = [], []
        for start in range(0, len(words), batch_size):
            batch = tf.ragged.constant([list(title) for title in words[start:start + batch_size]], tf.string)
            outputs = {name: value.numpy() for name, value in self(batch).items()}
            firsts.append(outputs.pop("first_pieces"))
            arrays.append(outputs)
        width = max(first.shape[1] for first in firsts)
        first_pieces = np.concatenate([np.pad(f, ((0, 0), (0, width - f.shape[1]))) for f in firsts])
        arrays = {name: np.concatenate([batch[name] for batch in arrays]) for name in arrays[0]}
        return AlignedTokens(arrays, arrays["padding_mask"].sum(axis=1).astype("int32"), first_pieces)


def tag_targets(tokens, tags, vocabulary):
    """Per-position targets `[N, sequence_length]`: each kept word's tag id at
    its first piece, `IGNORED` elsewhere; an unknown tag is named."""
    targets = np.full(tokens.arrays["token_ids"].shape, IGNORED, np.int32)
    index = {name: number for number, name in enumerate(vocabulary.names)}
    for row, (first, title_tags) in enumerate(zip(tokens.first_pieces, tags)):
        for word, tag in enumerate(title_tags):
            if tag not in index:
                raise DataError(f"title {row + 1}: tag {tag!r} is not among the tags {list(vocabulary.names)}.")
            if first[word]:
                targets[row, first[word]] = index[tag]
    return targets
