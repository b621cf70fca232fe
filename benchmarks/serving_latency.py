"""Serving latency of an exported MiniLM text classifier.

1. In-graph trimming (tl_keras' default) vs the untrimmed graph (every request
   padded to the sequence length), calling the SavedModel in-process: p50/p99
   on single short texts and on batches of 32 real sentences. Target: >= 2x
   lower p50 for single short texts.
2. The local gRPC server under a bounded concurrent load (loopback only,
   stops by itself): p50/p99, throughput, failures; and single-text p50
   through gRPC vs calling the Keras model directly in this process.
   Target: p50 <= 1.2x.

    .venv/bin/python benchmarks/serving_latency.py
"""

import argparse
import concurrent.futures
import tempfile
import time

import numpy as np
from common import reviews
import tensorflow as tf

from tl_keras.models.backbones import load_text_backbone, minilm_l6_offline_path
from tl_keras.export.text import export_text_model
from tl_keras.models.heads import build_encoder, build_head, build_text_model
from tl_keras.serving.local_server import LocalServer
from tl_keras.serving.clients import GrpcClient


def percentiles(seconds):
    values = 1000 * np.asarray(seconds)
    return np.percentile(values, 50), np.percentile(values, 99)


def timed(function, inputs, repeats):
    for value in inputs[:3]:
        function(value)  # Warm up.
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        function(inputs[i % len(inputs)])
        times.append(time.perf_counter() - start)
    return times


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sequence-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--load-requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    _, validation, vocab, _, _ = reviews()
    texts = validation.texts
    backbone, preprocessor = load_text_backbone(minilm_l6_offline_path(), args.sequence_length)
    model = build_text_model(build_encoder(backbone, "mean"), build_head(384, 2, "classification"))

    with tempfile.TemporaryDirectory() as base:
        trimmed = export_text_model(model, preprocessor, vocab, base, "reviews", version=1)
        untrimmed = export_text_model(model, preprocessor, vocab, base, "untrimmed", trim=False)
        graphs = {name: tf.saved_model.load(str(path)).signatures["serving_default"]
                  for name, path in (("trimmed", trimmed), ("untrimmed", untrimmed))}
        singles = [tf.constant([t]) for t in texts]
        batches = [tf.constant(texts[i:i + 32]) for i in range(0, len(texts) - 31, 32)]
        print(f"MiniLM-L6 classifier, sequence length {args.sequence_length}, {args.repeats} calls each, in-process")
        p50 = {}
        for label, inputs in (("single text", singles), ("batch of 32", batches)):
            for name, function in graphs.items():
                p50[label, name], p99 = percentiles(timed(lambda x: function(text=x), inputs, args.repeats))
                print(f"  {label:12s} {name:9s}: p50 {p50[label, name]:7.2f} ms   p99 {p99:7.2f} ms")
            print(f"  {label:12s} trimmed p50 is {p50[label, 'untrimmed'] / p50[label, 'trimmed']:.2f}x lower "
                  f"(target >= 2x for single texts)")

        keras_call = tf.function(lambda x: model(preprocessor(x), training=False))
        direct = percentiles(timed(keras_call, singles, args.repeats))[0]
        with LocalServer(base, grpc_port=0, rest_port=None) as server:
            client = GrpcClient(f"127.0.0.1:{server.grpc_port}", "reviews", timeout=30)
            served = percentiles(timed(lambda x: client.predict(x), [[t] for t in texts], args.repeats))[0]
            print(f"single text p50: gRPC local server {served:.2f} ms vs Keras model in-process {direct:.2f} ms "
                  f"= {served / direct:.2f}x (target <= 1.2x)")
            failures, times = 0, []

            def one(i):
                start = time.perf_counter()
                client.predict([texts[i % len(texts)]])
                return time.perf_counter() - start

            start = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
                for future in [pool.submit(one, i) for i in range(args.load_requests)]:
                    try:
                        times.append(future.result(timeout=60))
                    except Exception:  # Counted and reported, never hidden.
                        failures += 1
            elapsed = time.perf_counter() - start
            p50_load, p99_load = percentiles(times)
            print(f"load: {args.load_requests} requests, {args.concurrency} concurrent, loopback: p50 {p50_load:.1f} ms, "
                  f"p99 {p99_load:.1f} ms, {args.load_requests / elapsed:.1f} requests/s, {failures} failed")


if __name__ == "__main__":
    main()
