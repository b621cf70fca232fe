"""Batch prediction on Apache Beam against the same SavedModel called in
this process, side by side in one run.

Stages:
- `throughput`: the MiniLM-L6 classifier export (a head over mean-pooled
  MiniLM; its weights do not change the cost) over 20,000 reviews (the
  bundled UCI sentences of all three domains, repeated with new ids:
  synthetic rows, for speed only) in 4 JSON-lines shards. In-process: a
  loop that reads the same files, calls the `SessionBundle` signature in
  batches of the same size and writes JSON lines. Target: Beam's throughput
  >= 0.8x, identical labels.
- `scale`: a 2-layer, 32-wide BERT classifier built from config (so the
  data and not the model dominates) over 10,000 to 1,000,000 synthetic rows
  (the same sentences), each size in a fresh process: wall time, rows/s
  and peak resident memory, for batch prediction on Beam (`--job predict`)
  and for frozen training from the streamed corpus (`--job train`: shards
  of features written, then one epoch of the head over them), and for
  catalogue embedding (`--job embed`: the rows as items, embedded by a
  retrieval export's `embed_items` over the same tiny BERT, trained one
  epoch on the synthetic shop, into an item index). Target: memory within
  20%, time linear (the marginal time a row, between sizes).

    .venv/bin/python benchmarks/batch_predict.py --stage throughput
    .venv/bin/python benchmarks/batch_predict.py --stage scale --job predict --sizes 10000,100000,1000000
    .venv/bin/python benchmarks/batch_predict.py --stage scale --job train --sizes 10000,100000,1000000
    .venv/bin/python benchmarks/batch_predict.py --stage scale --job embed --sizes 10000,100000,1000000
"""

import argparse
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from common import REVIEWS, Timer
from tl_keras.core.quiet import import_tensorflow_quietly

SENTENCES = sorted(REVIEWS.parent.glob("*_labelled.txt"))


def sentences():
    return [line.rsplit("\t", 1)[0] for path in SENTENCES for line in path.read_text().splitlines() if line.strip()]


def write_shards(folder, rows, shards):
    """`rows` synthetic rows (ids r0, r1, ...) over `shards` JSON-lines files."""
    texts = sentences()
    folder.mkdir(parents=True, exist_ok=True)
    streams = [open(folder / f"reviews-{i:05d}-of-{shards:05d}.jsonl", "w") for i in range(shards)]
    per_shard = -(-rows // shards)
    for i in range(rows):
        streams[i // per_shard].write(json.dumps({"id": f"r{i}", "text": texts[i % len(texts)],
                                                  "label": ("neg", "pos")[i % 2]}) + "\n")
    for stream in streams:
        stream.close()
    return sorted(folder.glob("reviews-*.jsonl"))


def minilm_export(base, sequence_length=128):
    from tl_keras.data.texts import LabelVocabulary
    from tl_keras.export.text import export_text_model
    from tl_keras.models.backbones import load_text_backbone, minilm_l6_offline_path
    from tl_keras.models.heads import build_encoder, build_head, build_text_model

    backbone, preprocessor = load_text_backbone(minilm_l6_offline_path(), sequence_length)
    model = build_text_model(build_encoder(backbone, "mean"), build_head(384, 2, "classification"))
    return export_text_model(model, preprocessor, LabelVocabulary.from_labels(["neg", "pos"]), base, "reviews")


def tiny_preset(folder):
    """The 2-layer, 32-wide BERT of the scale runs, as a preset folder."""
    import keras
    import keras_hub

    words = sorted({word for text in sentences() for word in text.lower().split()})[:2000]
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(vocabulary_size=len(vocabulary), num_layers=2, num_heads=2,
                                             hidden_dim=32, intermediate_dim=64, max_sequence_length=64)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer(vocabulary=vocabulary, lowercase=True), sequence_length=64)
    backbone.save_to_preset(str(folder))
    preprocessor.save_to_preset(str(folder))
    return folder


def tiny_export(scratch):
    from tl_keras.tasks.text_classifier import TextClassifier

    classifier = TextClassifier.from_preset(str(scratch / "preset"), labels=["neg", "pos"], strategy="frozen",
                                            sequence_length=64)
    return classifier.export(str(scratch / "exports"), "reviews")


def tiny_retrieval_export(scratch):
    """A retrieval export over the tiny BERT (its `embed_items` embeds the
    scale runs' rows), trained one epoch on the synthetic shop."""
    from tl_keras.data.interactions import read_interactions, read_items, read_users, time_ordered_split
    from tl_keras.data.synthetic_shop import make_synthetic_shop
    from tl_keras.tasks.retrieval import Retrieval

    items, interactions, users = make_synthetic_shop(seed=0).write(scratch / "shop")
    catalog = read_items(items)
    interactions, users = read_interactions(interactions, catalog, read_users(users))
    retrieval = Retrieval.from_preset(str(scratch / "preset"), catalog, users, sequence_length=64)
    retrieval.fit(time_ordered_split(interactions, 2).train, epochs=1, verbose=0)
    return retrieval.export(str(scratch / "exports"), "shop")


def in_process(folder, files, output, batch_size):
    """Reads the files, scores them with the signature in batches and writes
    JSON lines: the plain single-process way."""
    from tl_keras.serving.inference import json_value
    from tl_keras.serving.session_bundle import SessionBundle

    signature = SessionBundle(folder).signatures["serving_default"]
    with open(output, "w") as out:
        def flush(ids, texts):
            outputs = signature(text=np.asarray(texts, object))
            encoded = {name: json_value(value) for name, value in outputs.items()}
            for row, row_id in enumerate(ids):
                out.write(json.dumps({"id": row_id, **{k: v[row] for k, v in encoded.items()}}) + "\n")

        ids, texts = [], []
        for path in files:
            with open(path, "rb") as stream:
                for line in stream:
                    row = json.loads(line)
                    ids.append(row["id"])
                    texts.append(row["text"].encode())
                    if len(ids) == batch_size:
                        flush(ids, texts)
                        ids, texts = [], []
        if ids:
            flush(ids, texts)


def read_outputs(paths):
    rows = {}
    for path in paths:
        for line in pathlib.Path(path).read_text().splitlines():
            row = json.loads(line)
            rows[row["id"]] = row
    return rows


def throughput(args):
    from tl_keras.pipelines.batch_predict import batch_predict

    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        folder = minilm_export(scratch / "exports")
        files = write_shards(scratch / "in", args.rows, 4)
        # One warm-up each, so neither side pays the first graph's tracing and allocation alone.
        in_process(folder, files[:1], scratch / "warm.jsonl", args.batch_size)
        with Timer() as local:
            in_process(folder, files, scratch / "in_process.jsonl", args.batch_size)
        with Timer() as beam:
            result = batch_predict(folder.parent, str(scratch / "in" / "*.jsonl"), str(scratch / "out" / "scored"),
                                   batch_size=args.batch_size)
        mine = read_outputs([scratch / "in_process.jsonl"])
        theirs = read_outputs(sorted((scratch / "out").glob("scored-[0-9]*.jsonl")))
        same_ids = sorted(mine) == sorted(theirs)
        labels = sum(mine[i]["label"] == theirs[i]["label"] for i in mine if i in theirs)
        gap = max(float(np.max(np.abs(np.subtract(mine[i]["probabilities"], theirs[i]["probabilities"]))))
                  for i in mine if i in theirs)
    report = {"rows": args.rows, "batch_size": args.batch_size, "in_process_s": round(local.seconds, 1),
              "beam_s": round(beam.seconds, 1), "in_process_rows_per_s": round(args.rows / local.seconds),
              "beam_rows_per_s": round(args.rows / beam.seconds),
              "throughput_ratio": round(local.seconds / beam.seconds, 3), "predicted": result.predicted,
              "dead_letters": result.dead_letters, "same_ids": same_ids, "same_labels": labels,
              "max_probability_gap": gap}
    print(json.dumps(report))


def scale_one(args):
    """One size in this process: prints seconds and peak RSS."""
    from tl_keras.pipelines.batch_predict import batch_predict

    scratch = pathlib.Path(args.scratch)
    inputs = str(scratch / f"in-{args.rows}" / "*.jsonl")
    if args.job == "predict":
        with Timer() as timer:
            result = batch_predict(scratch / "exports" / "reviews", inputs,
                                   str(scratch / f"out-{args.rows}" / "scored"), batch_size=args.batch_size)
        done = {"predicted": result.predicted}
    elif args.job == "embed":
        from tl_keras.pipelines.catalogue_index import embed_catalogue

        with Timer() as timer:
            result = embed_catalogue(scratch / "exports" / "shop", inputs, scratch / f"index-{args.rows}",
                                     batch_size=args.batch_size)
        done = {"predicted": result.predicted, "dead_letters": result.dead_letters}
    else:
        from tl_keras.data.streams import stream_labelled_texts
        from tl_keras.tasks.text_classifier import TextClassifier
        from tl_keras.transfer.sharded_features import ShardedFeatures

        classifier = TextClassifier.from_preset(str(scratch / "preset"), labels=["neg", "pos"], strategy="frozen",
                                                sequence_length=64)
        with Timer() as timer:
            features = ShardedFeatures.write(classifier.encoder, classifier.preprocessor,
                                             stream_labelled_texts(inputs), scratch / f"features-{args.rows}",
                                             classifier.targets, batch_size=256, verbose=0)
            history = classifier.fit_features(features, batch_size=256, epochs=1, verbose=0)
        done = {"trained_rows": len(features), "shards": len(features.shards), "loss": history.history["loss"][-1]}
    print(json.dumps({"job": args.job, "rows": args.rows, "seconds": timer.seconds, **done,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def scale(args):
    sizes = [int(size) for size in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        tiny_preset(scratch / "preset")
        tiny_retrieval_export(scratch) if args.job == "embed" else tiny_export(scratch)
        runs = []
        for size in sizes:
            write_shards(scratch / f"in-{size}", size, 8)
            done = subprocess.run([sys.executable, __file__, "--stage", "scale-one", "--rows", str(size),
                                   "--scratch", str(scratch), "--batch-size", str(args.batch_size), "--job", args.job],
                                  capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            for folder in (f"in-{size}", f"features-{size}", f"out-{size}", f"index-{size}"):
                shutil.rmtree(scratch / folder, ignore_errors=True)
            print(json.dumps(runs[-1]), flush=True)
    first = runs[0]
    for before, run in zip([None, *runs], runs):
        run["rows_per_s"] = round(run["rows"] / run["seconds"])
        run["memory_vs_smallest"] = round(run["peak_rss_mb"] / first["peak_rss_mb"], 3)
        if before:  # Start-up (imports, loading, tracing) cancels out between sizes.
            run["marginal_us_per_row"] = round(1e6 * (run["seconds"] - before["seconds"])
                                               / (run["rows"] - before["rows"]), 1)
    print(json.dumps({"job": args.job, "scale": runs}))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["throughput", "scale", "scale-one"], default="throughput")
    parser.add_argument("--rows", type=int, default=20_000, help="rows for `throughput` (and `scale-one`)")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="row counts for `scale`")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--job", choices=["predict", "train", "embed"], default="predict", help="what `scale` measures")
    parser.add_argument("--scratch", help="(scale-one) the scale run's folder")
    args = parser.parse_args()
    import_tensorflow_quietly()
    {"throughput": throughput, "scale": scale, "scale-one": scale_one}[args.stage](args)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
