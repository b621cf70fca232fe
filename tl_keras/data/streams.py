"""Labelled texts streamed from sharded files, one row at a time, for
corpora that do not fit in memory (`tl_keras.data.texts` reads small files
whole).

The files are any `tl_keras.data.records` format (JSON lines, CSV/TSV,
TFRecord, Parquet; gzip), matched by globs; a bad row raises `DataError`
naming its file and line, as the in-memory readers do.

Example:
>>> rows = stream_labelled_texts(["reviews/train-*.jsonl.gz"], text_field="review", label_field="stars")
>>> next(iter(rows))
('great phone', '5', 'reviews/train-00000-of-00064.jsonl.gz:1')
"""

import glob

from tl_keras.data.records import BadRecord, read_records
from tl_keras.data.texts import DataError


def matched_files(patterns):
    """The files the globs match, sorted; `DataError` naming a glob that
    matches none."""
    files = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        found = sorted(glob.glob(str(pattern)))
        if not found:
            raise DataError(f"{pattern}: matches no file.")
        files.extend(found)
    return files


class LabelledTextStream:
    """An iterable (again and again) of `(text, label, origin)` rows of the
    files the globs match.

    Args:
        patterns: globs (or one glob) of files.
        text_field: the field holding the text.
        label_field: the field holding the label.
    """

    def __init__(self, patterns, text_field="text", label_field="label"):
        self.files = matched_files(patterns)
        self.text_field, self.label_field = text_field, label_field

    def __iter__(self):
        for path in self.files:
            for record in read_records(path):
                origin = f"{record.file}:{record.line}"
                if isinstance(record, BadRecord):
                    raise DataError(f"{origin}: {record.reason}")
                text, label = (record.fields.get(self.text_field), record.fields.get(self.label_field))
                if isinstance(text, bytes):
                    text = text.decode("utf-8", "replace")
                if not isinstance(text, str) or not text.strip():
                    raise DataError(f"{origin}: no text in field {self.text_field!r} (received {text!r:.60}).")
                if label is None or label == "":
                    raise DataError(f"{origin}: no label in field {self.label_field!r}.")
                yield text, label.decode("utf-8") if isinstance(label, bytes) else str(label), origin


def stream_labelled_texts(patterns, text_field="text", label_field="label"):
    """A `LabelledTextStream` over the files the globs match."""
    return LabelledTextStream(patterns, text_field, label_field)
