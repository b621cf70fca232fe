"""Scoring files with an exported SavedModel on Apache Beam: what TF Serving
serves is what is batch-scored.

The pipeline reads rows from files (`tl_keras.data.records`: JSON lines,
CSV/TSV, TFRecord, Parquet; globs, shards, gzip), runs one signature of the
SavedModel loaded as TF Serving loads it (`SessionBundle`, in batches, with
Beam's `RunInference`), and writes one JSON line a row: the row's id, every
output of the signature (encoded as TF Serving's REST API encodes it) and
the model's version. A row that cannot be read or scored goes to the dead
letters with its file, line and reason; it never stops the job. A batch the
model refuses is scored again row by row, so one bad image costs one row.

Inputs named `*_bytes` (`image_bytes`) take bytes: raw in TFRecord and
Parquet; `{"b64": ...}` or a file path (relative to the input file's folder)
in JSON lines and CSV.

Beam's local Python runner (`FnApiRunner`) runs it by default; give
`runner` and Beam's own options (`--runner=FlinkRunner`, Dataflow's
`--project`, ...) for a cluster.
"""

import base64
import dataclasses
import json
import pathlib
import posixpath

import numpy as np

from tl_keras.core.quiet import beam_notices_dropped
from tl_keras.data.records import BadRecord, read_records
from tl_keras.serving.inference import call, json_value
from tl_keras.serving.model_repository import ModelError, first_line
from tl_keras.serving.session_bundle import SessionBundle

with beam_notices_dropped():
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.metrics import Metrics, MetricsFilter
    from apache_beam.ml.inference.base import KeyedModelHandler, ModelHandler, PredictionResult, RunInference
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

NAMESPACE = "tl_keras"
DEAD_LETTERS = "dead-letters"


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    """What a batch job did: rows read, rows written to the outputs, rows in
    the dead letters, the model version and the output prefix."""

    rows: int
    predicted: int
    dead_letters: int
    version: int
    output: str


def version_folder(model_dir, version=None):
    """`(version, folder)` of an export base folder's newest version (every
    all-digit sub-folder, as TF Serving reads them), or of `version`.

    Example:
    >>> version_folder("exports/reviews")
    (3, 'exports/reviews/3')
    """
    base = str(model_dir).rstrip("/")
    found = {}
    for match in FileSystems.match([posixpath.join(base, "*", "saved_model.pb")])[0].metadata_list:
        name = posixpath.basename(posixpath.dirname(match.path))
        if name.isdigit() and name.isascii():
            found[int(name)] = posixpath.dirname(match.path)
    if not found:
        models = sorted(posixpath.dirname(posixpath.dirname(match.path)) for match in FileSystems.match(
            [posixpath.join(base, "*", "*", "saved_model.pb")])[0].metadata_list)
        hint = f"; did you mean {models[0]}?" if models else ""
        raise ValueError(f"{model_dir}: no <version>/saved_model.pb inside; give an export base folder "
                         f"(the folder holding the version folders){hint}")
    if version is None:
        version = max(found)
    if version not in found:
        raise ValueError(f"{model_dir}: no version {version!r} (has {sorted(found)}).")
    return version, found[version]


def signature_inputs(folder, signature_name="serving_default"):
    """The input names of a SavedModel's signature, read from its
    `saved_model.pb` (any Beam file system) without loading it."""
    from tensorflow.core.protobuf import saved_model_pb2

    with FileSystems.open(posixpath.join(folder, "saved_model.pb"), compression_type="uncompressed") as stream:
        proto = saved_model_pb2.SavedModel.FromString(stream.read())
    signatures = {name: value for name, value in proto.meta_graphs[0].signature_def.items()
                  if not name.startswith("__")}
    if signature_name not in signatures:
        raise ValueError(f"{folder} has no signature {signature_name!r} (has {sorted(signatures)}).")
    return sorted(signatures[signature_name].inputs)


class SavedModelHandler(ModelHandler):
    """A Beam `ModelHandler` running one signature of a SavedModel, loaded
    as TF Serving loads it; a refused batch is run again row by row and a
    refused row's result is the `ModelError`.

    Args:
        folder: the SavedModel (a version folder).
        signature_name: the signature to run.
        batch_size: rows a call takes (Beam's batches are exactly this size
            but at a bundle's end).

    Example:
    >>> handler = SavedModelHandler("exports/reviews/3", batch_size=64)
    """

    def __init__(self, folder, signature_name="serving_default", batch_size=64):
        super().__init__(min_batch_size=batch_size, max_batch_size=batch_size)
        self.folder = str(folder)
        self.signature_name = signature_name

    def load_model(self):
        import tensorflow_text  # noqa: F401  (registers the TF Text ops, as TF Serving links them)

        signatures = SessionBundle(self.folder).signatures
        if self.signature_name not in signatures:
            raise ValueError(f"{self.folder} has no signature {self.signature_name!r} (has {sorted(signatures)}).")
        return signatures[self.signature_name]

    def run_inference(self, batch, model, inference_args=None):
        try:
            return _results(batch, self._call(model, batch))
        except ModelError as error:
            if len(batch) == 1:
                return [PredictionResult(batch[0], error)]
        results = []
        for example in batch:  # Only the refused rows are lost.
            try:
                results.extend(_results([example], self._call(model, [example])))
            except ModelError as error:
                results.append(PredictionResult(example, error))
        return results

    def _call(self, model, batch):
        try:
            return call(model, self.signature_name, {name: np.asarray([example[name] for example in batch], object)
                                                      for name in model.input_specs})
        except (ValueError, TypeError) as error:
            raise ModelError(first_line(error)) from None

    def get_metrics_namespace(self):
        return NAMESPACE


def _results(batch, outputs):
    encoded = {name: json_value(value, name.endswith("_bytes")) for name, value in outputs.items()}
    return [PredictionResult(example, {name: value[row] for name, value in encoded.items()})
            for row, example in enumerate(batch)]


def dead_letter(file, line, reason, row_id=None):
    """A dead-letter row as written: the file, line, id (when read) and why."""
    return json.dumps({"file": file, "line": line, "id": row_id, "reason": reason}, ensure_ascii=False)


class ToExample(beam.DoFn):
    """A `Record` to `((file, line, id), {input: value})`, or a dead letter
    (tagged `dead`) naming what is missing or wrong.

    Args:
        inputs: the signature's input names.
        fields: `{input name: the record's field}` for inputs named
            otherwise in the files.
        id_field: the field that holds each row's id.
    """

    def __init__(self, inputs, fields=None, id_field="id"):
        self.inputs = tuple(inputs)
        self.fields = {name: (fields or {}).get(name, name) for name in self.inputs}
        self.id_field = id_field
        self.read = Metrics.counter(NAMESPACE, "rows")

    def process(self, record):
        self.read.inc()
        if isinstance(record, BadRecord):
            yield beam.pvalue.TaggedOutput("dead", dead_letter(record.file, record.line, record.reason))
            return
        row_id = record.fields.get(self.id_field)
        if isinstance(row_id, bytes):
            row_id = row_id.decode("utf-8", "replace")
        if row_id is None or row_id == "" or isinstance(row_id, (list, dict, float)):
            yield beam.pvalue.TaggedOutput("dead", dead_letter(
                record.file, record.line, f"no usable {self.id_field!r} field (received {row_id!r:.60})"))
            return
        example = {}
        for name, field in self.fields.items():
            try:
                example[name] = self._value(record, name, field)
            except ValueError as error:
                yield beam.pvalue.TaggedOutput("dead", dead_letter(record.file, record.line, str(error), row_id))
                return
        yield (record.file, record.line, row_id), example

    def _value(self, record, name, field):
        if field not in record.fields or record.fields[field] is None:
            raise ValueError(f"no {field!r} field (the signature's input {name!r})")
        value = record.fields[field]
        if name.endswith("_bytes"):
            return _binary(value, field, record.file)
        if isinstance(value, bytes):
            return value
        if not isinstance(value, str):
            raise ValueError(f"{field!r} must be text, received {value!r:.60}")
        return value.encode("utf-8")


def _binary(value, field, file):
    if isinstance(value, bytes):
        return value
    if isinstance(value, dict) and set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except (ValueError, TypeError) as error:
            raise ValueError(f"{field!r}: bad base64 ({error})") from None
    if isinstance(value, str) and value:
        path = value if FileSystems.get_scheme(value) or posixpath.isabs(value) else posixpath.join(
            posixpath.dirname(file), value)
        try:
            with FileSystems.open(path, compression_type="uncompressed") as stream:
                return stream.read()
        except (OSError, IOError, beam.io.filesystem.BeamIOError) as error:
            raise ValueError(f"{field!r}: cannot read {path} ({first_line(error)})") from None
    raise ValueError(f"{field!r} must be bytes, {{\"b64\": ...}} or a file path, received {value!r:.60}")


class ScoredRow(beam.DoFn):
    """A keyed `PredictionResult` to what `format_row(row_id, outputs)`
    makes of it, or a dead letter (tagged `dead`) when the model refused
    the row; counts the rows `predicted`."""

    def __init__(self):
        self.predicted = Metrics.counter(NAMESPACE, "predicted")

    def process(self, keyed):
        (file, line, row_id), result = keyed
        if isinstance(result.inference, Exception):
            yield beam.pvalue.TaggedOutput("dead", dead_letter(file, line, str(result.inference), row_id))
            return
        self.predicted.inc()
        yield self.format_row(row_id, result.inference)

    def format_row(self, row_id, outputs):
        raise NotImplementedError


class ToOutput(ScoredRow):
    """The output JSON line: the id, every output and the model version."""

    def __init__(self, id_field, version):
        super().__init__()
        self.id_field, self.version = id_field, version

    def format_row(self, row_id, outputs):
        return json.dumps({self.id_field: row_id, **outputs, "model_version": self.version}, ensure_ascii=False)


class CountDeadLetters(beam.DoFn):
    """Counts the dead letters as they pass."""

    def __init__(self):
        self.dead = Metrics.counter(NAMESPACE, "dead_letters")

    def process(self, row):
        self.dead.inc()
        yield row


def input_files(patterns):
    """The files the globs `patterns` match, sorted; `ValueError` naming a
    glob that matches none."""
    files = []
    for pattern, result in zip(patterns, FileSystems.match(list(patterns))):
        if not result.metadata_list:
            raise ValueError(f"--input {pattern!r} matches no file.")
        files.extend(sorted(metadata.path for metadata in result.metadata_list))
    return files


def read_rows(pipeline, patterns, reshuffle=False):
    """The `Record`s and `BadRecord`s of every file the globs match, a file
    at a time (line numbers need the file read in order). `reshuffle`
    spreads the rows over workers after reading, for a few large files on a
    cluster; it holds every row between stages on the local runner."""
    rows = (pipeline | "Files" >> beam.Create(input_files(patterns))
            | "Read" >> beam.FlatMap(lambda path: read_records(path, FileSystems.open)))
    return rows | "Spread" >> beam.Reshuffle() if reshuffle else rows


def pipeline_options(beam_args=(), runner=None):
    """Beam's `PipelineOptions` from its own flags; without a runner, Beam's
    local Python runner (`DirectRunner` would try the Prism runner first,
    which downloads a binary)."""
    options = PipelineOptions(list(beam_args))
    if runner:
        options.view_as(StandardOptions).runner = runner
    if options.view_as(StandardOptions).runner is None:
        from apache_beam.runners.portability.fn_api_runner import FnApiRunner

        return options, FnApiRunner()
    return options, None


def run_job(pipeline):
    """Runs `pipeline` to the end; returns its `tl_keras` counters
    (`{name: value}`) and distributions (`{name: (min, max)}`)."""
    with beam_notices_dropped():
        result = pipeline.run()
        result.wait_until_finish()
    metrics = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))
    counters = {entry.key.metric.name: entry.committed for entry in metrics["counters"]}
    distributions = {entry.key.metric.name: (entry.committed.min, entry.committed.max)
                     for entry in metrics["distributions"] if entry.committed.count}
    return counters, distributions


def job_result(counters, version, output):
    """A `PipelineResult` from a job's counters."""
    return PipelineResult(rows=counters.get("rows", 0), predicted=counters.get("predicted", 0),
                          dead_letters=counters.get("dead_letters", 0), version=version, output=output)


def write_lines(lines, prefix, label):
    """Writes JSON lines as `prefix-SSSSS-of-NNNNN.jsonl` shards."""
    return lines | label >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl", shard_name_template="-SSSSS-of-NNNNN")


def score_rows(pipeline, folder, inputs, signature_name="serving_default", fields=None, id_field="id",
               batch_size=64, reshuffle=False):
    """The scoring part of a job: reads the files the globs `inputs`
    match, runs the signature and returns `(results, dead)`: keyed
    `PredictionResult`s (`(file, line, id)` keys; a refused row's inference
    is its `ModelError`) and the dead letters of rows that could not be
    read, as JSON lines."""
    handler = SavedModelHandler(folder, signature_name, batch_size)
    rows = read_rows(pipeline, [inputs] if isinstance(inputs, str) else list(inputs), reshuffle)
    examples = rows | "Examples" >> beam.ParDo(ToExample(signature_inputs(folder, signature_name), fields,
                                                         id_field)).with_outputs("dead", main="rows")
    return examples.rows | "Predict" >> RunInference(KeyedModelHandler(handler)), examples.dead


def batch_predict(model_dir, inputs, output, version=None, signature_name="serving_default", fields=None,
                  id_field="id", batch_size=64, reshuffle=False, runner=None, beam_args=()):
    """Scores the rows of files with an exported SavedModel, on Beam.

    Args:
        model_dir: the export base folder (its version folders inside).
        inputs: globs of input files (or one glob).
        output: the output prefix: rows go to `OUTPUT-SSSSS-of-NNNNN.jsonl`,
            dead letters to `OUTPUT-dead-letters-SSSSS-of-NNNNN.jsonl`.
        version: the version to run; the newest if `None`.
        signature_name: the signature to run.
        fields: `{signature input: field}` for inputs named otherwise in
            the files (`{"text": "review"}`).
        id_field: the field holding each row's id, kept in the output.
        batch_size: rows a model call takes.
        reshuffle: spread rows over workers after reading (a few large
            files on a cluster).
        runner: a Beam runner name; Beam's local Python runner if `None`.
        beam_args: Beam's own pipeline flags.

    Returns:
        A `PipelineResult`.

    Example:
    >>> batch_predict("exports/reviews", "new/reviews-*.jsonl.gz", "scored/reviews")
    PipelineResult(rows=20000, predicted=19998, dead_letters=2, version=3, output='scored/reviews')
    """
    version, folder = version_folder(model_dir, version)
    options, local_runner = pipeline_options(beam_args, runner)
    with_parents(output)
    pipeline = beam.Pipeline(runner=local_runner, options=options)
    results, unread = score_rows(pipeline, folder, inputs, signature_name, fields, id_field, batch_size, reshuffle)
    scored = results | "Outputs" >> beam.ParDo(ToOutput(id_field, version)).with_outputs("dead", main="rows")
    write_lines(scored.rows, output, "WriteRows")
    write_lines(count_dead_letters(unread, scored.dead), f"{output}-{DEAD_LETTERS}", "WriteDead")
    return job_result(run_job(pipeline)[0], version, output)


def count_dead_letters(*dead):
    """The dead-letter PCollections as one, counted."""
    return dead | "AllDead" >> beam.Flatten() | "CountDead" >> beam.ParDo(CountDeadLetters())


def with_parents(prefix):
    """Creates a local output prefix's folder (remote file systems need none)."""
    if not FileSystems.get_scheme(str(prefix)):
        pathlib.Path(prefix).parent.mkdir(parents=True, exist_ok=True)
