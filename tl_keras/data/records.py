"""Rows read one at a time from files of any size, each with the file and
line it came from, and bad rows reported instead of raised.

Formats, chosen by the file's suffix (after an optional `.gz`):
- `.jsonl` / `.json`: one JSON object a line; `line` is the physical line.
- `.csv` / `.tsv`: a header row, then one row a record (quoted fields may
  span lines); `line` is the line the record starts on.
- `.tfrecord`: serialized `tf.train.Example`s; `line` is the record's
  number (1-based). Bytes features stay bytes; one-value features are
  unwrapped.
- `.parquet`: `line` is the row's number (1-based).

A row that cannot be read (not JSON, a wrong number of CSV fields, text
that is not UTF-8) is yielded as a `BadRecord` with the reason, and reading
goes on; a file that cannot be read at all (a corrupt TFRecord or Parquet
file) ends with one `BadRecord` for the rest of it.

Example:
>>> for row in read_records("reviews-00000-of-00004.jsonl.gz"):
...     print(row)
Record(file='reviews-00000-of-00004.jsonl.gz', line=1, fields={'id': 'r1', 'text': 'great phone'})
"""

import csv
import dataclasses
import gzip
import json

FORMATS = (".jsonl", ".json", ".csv", ".tsv", ".tfrecord", ".parquet")


@dataclasses.dataclass(frozen=True)
class Record:
    """One row: `fields` maps column (or feature) names to values."""

    file: str
    line: int
    fields: dict


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """A row (or the rest of a file) that could not be read, and why."""

    file: str
    line: int
    reason: str


def record_format(path):
    """The format suffix of `path` (`.jsonl`, `.csv`, ...), a `.gz` after it
    allowed; `ValueError` naming the path otherwise."""
    name = str(path).lower().removesuffix(".gz")
    for suffix in FORMATS:
        if name.endswith(suffix):
            return suffix
    raise ValueError(f"{path}: unknown record format; name it *.jsonl, *.csv, *.tsv, *.tfrecord or *.parquet "
                     "(optionally .gz).")


def open_local(path):
    """A local file as a binary stream, gunzipped when its name ends `.gz`."""
    return gzip.open(path, "rb") if str(path).lower().endswith(".gz") else open(path, "rb")


def read_records(path, open_file=open_local):
    """Yields a `Record` or `BadRecord` for every row of the file `path`.

    Args:
        path: the file; its suffix names the format (see the module).
        open_file: opens `path` as a decompressed binary stream (Beam's
            `FileSystems.open` for remote files); TFRecord files are read
            by `tf.data` from the path itself.
    """
    kind = record_format(path)
    path = str(path)
    if kind == ".tfrecord":
        yield from _tfrecord_rows(path)
        return
    with open_file(path) as stream:
        if kind == ".parquet":
            yield from _parquet_rows(path, stream)
        elif kind in (".csv", ".tsv"):
            yield from _delimited_rows(path, stream, "\t" if kind == ".tsv" else ",")
        else:
            yield from _json_rows(path, stream)


def _raw_lines(stream):
    # `readline` alone: Beam's compressed file objects have no `__iter__`.
    return iter(stream.readline, b"")


def _json_rows(path, stream):
    for number, raw in enumerate(_raw_lines(stream), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            yield BadRecord(path, number, f"not UTF-8 (byte {raw[error.start:error.start + 1]!r})")
            continue
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        try:
            fields = json.loads(text)
        except ValueError as error:
            yield BadRecord(path, number, f"not JSON ({error})")
            continue
        if not isinstance(fields, dict):
            yield BadRecord(path, number, f"expected a JSON object, received {type(fields).__name__}")
            continue
        yield Record(path, number, fields)


def _delimited_rows(path, stream, delimiter):
    # Undecodable bytes are kept as surrogates so one bad row does not end
    # the file; a row holding any is reported.
    lines = (raw.decode("utf-8", "surrogateescape") for raw in _raw_lines(stream))
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as error:
        yield BadRecord(path, 1, f"unreadable header ({error})")
        return
    header[0] = header[0].removeprefix("\ufeff")
    start = reader.line_num + 1
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield BadRecord(path, start, f"unreadable row ({error})")
            start = reader.line_num + 1
            continue
        line, start = start, reader.line_num + 1
        if not values or values == [""]:
            continue
        if len(values) != len(header):
            yield BadRecord(path, line, f"{len(values)} fields where the header has {len(header)}")
        elif any(_undecodable(value) for value in values):
            yield BadRecord(path, line, "not UTF-8")
        else:
            yield Record(path, line, dict(zip(header, values)))


def _undecodable(text):
    return any("\udc80" <= character <= "\udcff" for character in text)


def _tfrecord_rows(path):
    import tensorflow as tf

    compression = "GZIP" if path.lower().endswith(".gz") else ""
    records = iter(tf.data.TFRecordDataset(path, compression_type=compression).as_numpy_iterator())
    number = 0
    while True:
        number += 1
        try:
            serialized = next(records)
        except StopIteration:
            return
        except tf.errors.OpError as error:
            yield BadRecord(path, number, f"unreadable from here on ({error.message.splitlines()[0]})")
            return
        try:
            example = tf.train.Example.FromString(serialized)
        except Exception as error:  # protobuf's DecodeError has no public home.
            yield BadRecord(path, number, f"not a tf.train.Example ({error})")
            continue
        yield Record(path, number, {name: _feature_value(feature) for name, feature in example.features.feature.items()})


def _feature_value(feature):
    values = list(getattr(feature, feature.WhichOneof("kind")).value) if feature.WhichOneof("kind") else []
    return values[0] if len(values) == 1 else values


def _parquet_rows(path, stream):
    import pyarrow
    import pyarrow.parquet

    number = 0
    try:
        for batch in pyarrow.parquet.ParquetFile(stream).iter_batches():
            for fields in batch.to_pylist():
                number += 1
                yield Record(path, number, fields)
    except (pyarrow.ArrowException, OSError) as error:
        yield BadRecord(path, number + 1, f"unreadable from here on ({error})")
