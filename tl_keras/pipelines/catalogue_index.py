"""Embedding a catalogue on Apache Beam: item rows in, an item index out
(`tl_keras.data.item_index`), so that adding a million products never runs
the text encoder in one process.

The pipeline reads item rows (an id and the signature's inputs, `text` for
a retrieval export's `embed_items`), runs the signature in batches as
`batch_predict` does, and writes each item's id and vector to TFRecord
shards of a new index version; rows that cannot be read or embedded go to
its dead letters with their file, line and reason. The version is written
in a staging folder and renamed into place when the job has finished.

Example:
>>> embed_catalogue("exports/shop_retrieval", "catalogue/new-*.jsonl", "indexes/new_products")
PipelineResult(rows=1000000, predicted=1000000, dead_letters=0, version=1, output='indexes/new_products/1')
"""

import dataclasses
import json
import os
import pathlib
import shutil
import uuid

from tl_keras.core.files import write_atomically
from tl_keras.data.item_index import INDEX_FILE, SHARDS
from tl_keras.pipelines.batch_predict import (
    DEAD_LETTERS, NAMESPACE, ScoredRow, count_dead_letters, job_result, pipeline_options, run_job,
    score_rows, version_folder, write_lines)

import apache_beam as beam  # noqa: E402  (after batch_predict, which imports it with Beam's notices dropped)
from apache_beam.metrics import Metrics  # noqa: E402


class ToItem(ScoredRow):
    """An embedded item to its serialized `tf.train.Example` (`id`,
    `embedding`); records each vector's length."""

    def __init__(self, output_name):
        super().__init__()
        self.output_name = output_name
        self.dimension = Metrics.distribution(NAMESPACE, "dimension")

    def format_row(self, row_id, outputs):
        import tensorflow as tf

        vector = outputs[self.output_name]
        self.dimension.update(len(vector))
        return tf.train.Example(features=tf.train.Features(feature={
            "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(row_id).encode("utf-8")])),
            "embedding": tf.train.Feature(float_list=tf.train.FloatList(value=vector)),
        })).SerializeToString()


def embed_catalogue(model_dir, inputs, index_dir, version=None, signature_name="embed_items",
                    output_name="embeddings", fields=None, id_field="id", batch_size=64, reshuffle=False,
                    runner=None, beam_args=()):
    """Embeds item rows with an exported signature into a new version of an
    item index, on Beam.

    Args:
        model_dir: the export base folder (a retrieval export's, whose
            `embed_items` embeds item texts).
        inputs: globs of item files (`.jsonl`, `.csv`, `.tsv`, `.tfrecord`,
            `.parquet`, optionally `.gz`), each row an id and the inputs.
        index_dir: the index's base folder; the job writes its next version.
        version: the export version to run; the newest if `None`.
        signature_name: the signature that embeds items.
        output_name: the signature's output holding the vectors.
        fields: `{signature input: field}` for inputs named otherwise.
        id_field: the field holding each item's id.
        batch_size: rows a model call takes.
        reshuffle, runner, beam_args: as for `batch_predict`.

    Returns:
        A `PipelineResult` whose `output` is the new index version folder.
    """
    model_version, folder = version_folder(model_dir, version)
    base = pathlib.Path(index_dir)
    base.mkdir(parents=True, exist_ok=True)
    staging = base / f".staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        options, local_runner = pipeline_options(beam_args, runner)
        pipeline = beam.Pipeline(runner=local_runner, options=options)
        results, unread = score_rows(pipeline, folder, inputs, signature_name, fields, id_field, batch_size,
                                     reshuffle)
        items = results | "Items" >> beam.ParDo(ToItem(output_name)).with_outputs("dead", main="rows")
        _ = items.rows | "WriteItems" >> beam.io.WriteToTFRecord(
            str(staging / SHARDS), file_name_suffix=".tfrecord", shard_name_template="-SSSSS-of-NNNNN")
        write_lines(count_dead_letters(unread, items.dead), str(staging / DEAD_LETTERS), "WriteDead")
        counters, distributions = run_job(pipeline)
        low, high = distributions.get("dimension", (0, 0))
        if low != high:
            raise ValueError(f"{folder}'s output {output_name!r} gave vectors of {low} to {high} values; an index "
                             "needs one length.")
        counted = job_result(counters, model_version, None)
        write_atomically(staging / INDEX_FILE, json.dumps({
            "items": counted.predicted, "dimension": high, "model": str(model_dir), "model_version": model_version,
            "signature": signature_name, "output": output_name, "dead_letters": counted.dead_letters},
            indent=2) + "\n")
        taken = [int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit()]
        target = base / str(max(taken, default=0) + 1)
        os.rename(staging, target)  # The whole version appears at once.
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dataclasses.replace(counted, output=str(target))
