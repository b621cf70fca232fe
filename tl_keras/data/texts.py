"""Reading labelled texts and building the label vocabulary.

Every reader returns a `LabelledTexts`: the texts, their raw label strings and
where each row came from, so that any later error can name the file and line.
Nothing is silently dropped: a bad row raises `DataError` and nothing trains.
"""

import csv
import dataclasses
import io
import json
import math
import pathlib

import numpy as np

from tl_keras.core.choices import TASKS

MULTILABEL_SEPARATOR = ","
MULTILABEL_THRESHOLD = 0.5  # A multi-label prediction names every label with a probability at least this.


class DataError(ValueError):
    """A data file or row that cannot be used, with the file and line named."""


@dataclasses.dataclass
class LabelledTexts:
    """Texts with raw label strings and the `file:line` each came from."""

    texts: list
    labels: list
    origins: list

    def __len__(self):
        return len(self.texts)

    def subset(self, indices):
        """Returns the rows at `indices` as a new `LabelledTexts`."""
        return LabelledTexts(
            texts=[self.texts[i] for i in indices],
            labels=[self.labels[i] for i in indices],
            origins=[self.origins[i] for i in indices],
        )


def decode_utf8(path):
    """The text of a UTF-8 file, without a leading byte-order mark; a file
    that is not UTF-8 raises `DataError` naming the line and byte."""
    raw = pathlib.Path(path).read_bytes()
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: the file is not UTF-8 (byte "
            f"{raw[error.start:error.start + 1]!r} at offset {error.start}). "
            "Re-encode it as UTF-8."
        ) from None


def csv_records(path, required=()):
    """Yields `(origin, record)` for each row of a CSV file with a header,
    parsed strictly: a row whose field count differs from the header's, a
    quote left open or a quoted field running over several lines (the mark
    of an unbalanced quote, which would merge rows) raises `DataError`
    naming the line. Blank lines are skipped.

    Args:
        path: the CSV file (UTF-8; a byte-order mark is dropped).
        required: column names the header must have.

    Example:
    >>> for origin, record in csv_records("items.csv", ["item_id", "text"]):
    ...     print(origin, record["item_id"])
    items.csv:2 sku-1
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file.")
    reader = csv.reader(io.StringIO(decode_utf8(path)), strict=True)
    last_line = 0
    try:
        header = next(reader, None)
        if not header:
            raise DataError(f"{path}:1: no header row.")
        header = [name.strip() for name in header]
        missing = [column for column in required if column not in header]
        if missing:
            raise DataError(f"{path}:1: missing column(s) {missing}; the header is {header}.")
        last_line = reader.line_num
        for fields in reader:
            first_line, last_line = last_line + 1, reader.line_num
            if not fields:
                continue
            if first_line != last_line:
                raise DataError(f"{path}:{first_line}: a quoted field runs from line {first_line} to {last_line} "
                                f"(an unbalanced quote?): {fields[0][:60]!r}")
            if len(fields) != len(header):
                raise DataError(f"{path}:{first_line}: {len(fields)} field(s) where the header has {len(header)} "
                                f"{header}: {fields!r:.100}")
            yield f"{path}:{first_line}", dict(zip(header, fields))
    except csv.Error as error:
        if "end of data" in str(error):  # A quote that never closes: name the row it opens.
            raise DataError(f"{path}:{last_line + 1}: a quoted field starts here and never ends (an unbalanced "
                            f"quote?); the file ends at line {reader.line_num}.") from None
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({error}).") from None


def _lines(text):
    """Splits on line feeds only (with an optional carriage return): texts may
    hold U+0085 or U+2028, which `str.splitlines` would also split on."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _rows_tsv(path, text, labelled, paired=False, names=("text", "text_pair", "label")):
    """Yields (line, text, label) of a headerless TSV; `names` (text, pair,
    label) only name the fields in errors (`prompt<TAB>answer`)."""
    layout = "<TAB>".join(names[:1 + paired])
    layout, wanted = (f"{layout}<TAB>{names[2]}", 2 + paired) if labelled else (layout, 1 + paired)
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < wanted or (labelled and len(fields) != wanted):
            raise DataError(
                f"{path}:{number}: expected `{layout}` ({wanted} fields), "
                f"received {len(fields)} field(s): {line[:80]!r}"
            )
        yield number, tuple(fields[:2]) if paired else fields[0], fields[wanted - 1] if labelled else None


def _rows_table(path, records, text_column, label_column, pair_column=None):
    """Yields (line, text, label) from dict records (csv or jsonl); label is
    None when `label_column` is None; text is a `(text, text_pair)` tuple
    when `pair_column` is given."""
    for number, record in records:
        for column in (text_column, pair_column, label_column):
            if column is not None and column not in record:
                raise DataError(
                    f"{path}:{number}: missing column {column!r}; the row has "
                    f"columns {sorted(record)}. Pass --text-column"
                    f"{', --pair-column' if pair_column else ''} and --label-column."
                )
        texts = []
        for column in (text_column, pair_column) if pair_column else (text_column,):
            text = record[column]
            if not isinstance(text, str):
                raise DataError(f"{path}:{number}: column {column!r} must hold a string, received "
                                f"{type(text).__name__} {text!r:.60}.")
            texts.append(text)
        yield (number, tuple(texts) if pair_column else texts[0],
               _label_string(record.get(label_column), f"{path}:{number}", label_column))


def _label_string(label, origin, column):
    """A label as its string: JSON numbers and lists of strings (multi-label)
    are accepted; other types, NaN and infinities are refused."""
    if label is None or isinstance(label, str):
        return label
    if isinstance(label, (int, float)) and not isinstance(label, bool):
        if not math.isfinite(label):
            raise DataError(f"{origin}: column {column!r} must be finite, received {label!r}.")
        return str(label)
    if isinstance(label, list) and all(isinstance(part, str) for part in label):
        return MULTILABEL_SEPARATOR.join(label)
    raise DataError(f"{origin}: column {column!r} must hold a string, a number or a list of strings, "
                    f"received {type(label).__name__} {label!r:.60}.")


def _csv_records(path):
    for origin, record in csv_records(path):
        yield origin.rsplit(":", 1)[1], record


def _jsonl_records(path, text):
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}:{number}: not valid JSON ({error.msg}): {line[:80]!r}"
            ) from None
        except RecursionError:
            raise DataError(f"{path}:{number}: JSON nested too deeply: {line[:80]!r}") from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}:{number}: expected a JSON object, received "
                f"{line[:80]!r}"
            )
        yield number, record


def read_labelled_texts(path, text_column="text", label_column="label", pair_column=None):
    """Reads a `.tsv`/`.txt`, `.csv` or `.jsonl` file of labelled texts, or
    of labelled text pairs.

    `.tsv` and `.txt` files hold `text<TAB>label` lines with no header (the
    format of the bundled review data), or `text<TAB>text_pair<TAB>label`
    with `pair_column`. `.csv` files have a header row and `.jsonl` files
    one object a line; both take the columns named by `text_column`,
    `pair_column` and `label_column`.

    Args:
        path: the file to read.
        text_column: the column holding the text (`.csv` and `.jsonl`).
        label_column: the column holding the label (`.csv` and `.jsonl`).
        pair_column: the column holding each text's second text (any name
            for `.tsv`: the second field); each row's text is then a
            `(text, text_pair)` tuple. `None` for single texts.

    Returns:
        A `LabelledTexts`.

    Raises:
        DataError: naming the file, the line and the received value, for a
            missing file, an unknown extension, a missing column, a file that
            is not UTF-8, an empty text or an empty label.

    Example:
    >>> rows = read_labelled_texts("data/sentiment_labelled_sentences/"
    ...                            "amazon_cells_labelled.txt")
    >>> rows.texts[1], rows.labels[1]
    ('Good case, Excellent value.', '1')
    """
    result = LabelledTexts([], [], [])
    for origin, sentence, label in _read_rows(path, text_column, label_column, labelled=True,
                                              pair_column=pair_column):
        label = "" if label is None else str(label).strip()
        if not label:
            raise DataError(f"{origin}: missing {label_column} for {text_column} {str(sentence)[:60]!r}.")
        result.texts.append(sentence)
        result.labels.append(label)
        result.origins.append(origin)
    return result


def _read_rows(path, text_column, label_column, labelled, pair_column=None):
    """Yields (origin, text, label) of a data file, checking every text;
    label is None when not `labelled`; text is a `(text, text_pair)` tuple
    with `pair_column`."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file.")
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".txt"):
        rows = _rows_tsv(path, decode_utf8(path), labelled, paired=pair_column is not None,
                         names=(text_column, pair_column or "text_pair", label_column or "label"))
    elif suffix in (".csv", ".jsonl"):
        records = _csv_records(path) if suffix == ".csv" else _jsonl_records(path, decode_utf8(path))
        rows = _rows_table(path, records, text_column, label_column if labelled else None, pair_column)
    else:
        raise DataError(
            f"{path}: unknown file type {suffix!r}; expected one of "
            "'.tsv', '.txt', '.csv', '.jsonl'."
        )
    empty = True
    for number, sentence, label in rows:
        empty = False
        origin = f"{path}:{number}"
        for part, name in zip((sentence,) if isinstance(sentence, str) else sentence,
                              (text_column, pair_column or "text pair")):
            if not part.strip():
                raise DataError(f"{origin}: empty {name} (received {part!r}).")
        yield origin, sentence, label
    if empty:
        raise DataError(f"{path}: the file holds no rows.")


def read_texts(path, text_column="text"):
    """Reads unlabelled texts: the first field of each `.tsv`/`.txt` line (a
    label after a tab is ignored), or `text_column` of a `.csv`/`.jsonl`.

    Raises `DataError` naming the file and line for a missing file, an unknown
    type, a missing column, a file that is not UTF-8 or an empty text.

    Example:
    >>> texts = read_texts("data/sentiment_labelled_sentences/yelp_labelled.txt")
    """
    return [sentence for _, sentence, _ in _read_rows(path, text_column, None, labelled=False)]


def sorted_names(names):
    """Class names in the order their outputs take: by number when every
    name is an integer (`"2"` before `"10"`, so `num_classes` names are
    indices), otherwise as strings.

    Example:
    >>> sorted_names(["10", "2", "0"]), sorted_names(["pos", "neg"])
    (('0', '2', '10'), ('neg', 'pos'))
    """
    names = [str(name) for name in names]
    if names and all(name.lstrip("-").isdigit() for name in names):
        return tuple(sorted(names, key=int))
    return tuple(sorted(names))


@dataclasses.dataclass(frozen=True)
class LabelVocabulary:
    """Maps raw label strings to model targets, for one task.

    Build it from training labels with `from_labels`; it is stored with the
    model (in the export's graph and model card) so predictions come back as
    the training data's own label strings.

    Args:
        task: one of `"classification"`, `"multilabel"`, `"regression"`.
        names: the class names, `sorted_names` (empty for regression).

    Example:
    >>> vocab = LabelVocabulary.from_labels(["pos", "neg", "pos"])
    >>> vocab.names, vocab.encode(["neg"], origins=["a.tsv:1"]).tolist()
    (('neg', 'pos'), [0])
    """

    task: str
    names: tuple

    @classmethod
    def from_labels(cls, labels, task="classification", origins=None):
        if task not in TASKS:
            raise ValueError(f"`task` must be one of {TASKS}, received {task!r}.")
        if task == "regression":
            vocab = cls(task, ())
            vocab.encode(labels, origins)  # Validates that all parse.
            return vocab
        if task == "multilabel":
            origins = origins or [f"row {i + 1}" for i in range(len(labels))]
            names = {n for label, origin in zip(labels, origins) for n in _split_multilabel(label, origin)}
        else:
            names = set(labels)
        if len(names) < 2:
            raise DataError(
                f"training data has only one class {sorted(names)}; a "
                "classifier needs at least two."
            )
        return cls(task, sorted_names(names))

    @property
    def num_outputs(self):
        return 1 if self.task == "regression" else len(self.names)

    def encode(self, labels, origins=None):
        """Returns the numpy targets for `labels`, naming any bad row."""
        origins = origins or [f"row {i + 1}" for i in range(len(labels))]
        index = {name: i for i, name in enumerate(self.names)}
        if self.task == "regression":
            targets = np.zeros((len(labels),), "float32")
        elif self.task == "multilabel":
            targets = np.zeros((len(labels), len(self.names)), "float32")
        else:
            targets = np.zeros((len(labels),), "int32")
        for row, (label, origin) in enumerate(zip(labels, origins)):
            if self.task == "regression":
                targets[row] = _parse_float(label, origin)
                continue
            parts = (
                _split_multilabel(label, origin)
                if self.task == "multilabel"
                else [label]
            )
            for part in parts:
                if part not in index:
                    raise DataError(
                        f"{origin}: label {part!r} is not among the training "
                        f"labels {list(self.names)}."
                    )
                if self.task == "multilabel":
                    targets[row, index[part]] = 1.0
                else:
                    targets[row] = index[part]
        return targets


def _split_multilabel(label, origin):
    """A multi-label row's labels; an empty one between separators (`a,,b`,
    `a,`) is refused, naming the row: a typo that would otherwise train."""
    parts = [part.strip() for part in str(label).split(MULTILABEL_SEPARATOR)]
    if len(parts) > 1 and not all(parts):
        raise DataError(f"{origin}: multi-label {label!r} has an empty label between its "
                        f"{MULTILABEL_SEPARATOR!r} separators.")
    return [part for part in parts if part]


def _parse_float(label, origin):
    try:
        value = float(label)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise DataError(
            f"{origin}: regression label must be a finite number, received "
            f"{label!r}."
        )
    return value


def stratified_split(rows, validation_fraction=0.2, seed=1234, stratify=True):
    """Splits `rows` into (train, validation), keeping each label's share.

    Args:
        rows: a `LabelledTexts`.
        validation_fraction: the share held out, in (0, 1).
        seed: the shuffling seed, so the split is repeatable.
        stratify: keep each label's share (classification); `False` splits
            at random (regression).

    Example:
    >>> train, validation = stratified_split(rows, 0.2)
    """
    if not 0.0 < validation_fraction < 1.0:
        raise ValueError(
            "`validation_fraction` must be in (0, 1), received "
            f"{validation_fraction!r}."
        )
    rng = np.random.default_rng(seed)
    by_label = {}
    for i, label in enumerate(rows.labels):
        by_label.setdefault(label if stratify else "", []).append(i)
    train, validation = [], []
    for label in sorted(by_label):
        indices = np.array(by_label[label])
        rng.shuffle(indices)
        cut = int(round(len(indices) * validation_fraction))
        validation.extend(indices[:cut].tolist())
        train.extend(indices[cut:].tolist())
    return rows.subset(sorted(train)), rows.subset(sorted(validation))
