"""serve-local under hostile load: 8 clients send the worst requests of the
hardening round for 60 s (oversized and malformed bodies, shapes declaring
gigabytes, the most rows of the longest texts the limits allow, unknown
models, deep JSON, trickling and stalled connections, undecodable and
decompression-bomb images, bad tensors); then one normal request is timed.
It passes when the server is alive, answers the normal request correctly in
under 1 s, and its resident memory stayed bounded.

    .venv/bin/python benchmarks/serving_soak.py --seconds 60
"""

import argparse
import base64
import http.client
import json
import random
import resource
import socket
import struct
import tempfile
import threading
import time
import zlib

from common import minilm_l6_offline_path
import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tl_keras.data.texts import LabelVocabulary
from tl_keras.export.text import export_text_model
from tl_keras.models.backbones import load_text_backbone
from tl_keras.models.heads import build_encoder, build_head, build_text_model
from tl_keras.serving.local_server import LocalServer


def _png(width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def _rest(port, body, path="/v1/models/reviews:predict", headers=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection.putrequest("POST", path)
    for key, value in (headers or {"Content-Length": str(len(data))}).items():
        connection.putheader(key, value)
    connection.endheaders()
    connection.send(data)
    status = connection.getresponse().status
    connection.close()
    return status


def _trickle(port):
    connection = socket.create_connection(("127.0.0.1", port))
    try:
        for byte in b"POST /v1/models/reviews:predict HTTP/1.0\r\nContent-Length: 100\r\n\r\n{":
            connection.sendall(bytes([byte]))
            time.sleep(0.5)
    except OSError:
        pass
    finally:
        connection.close()
    return "cut"


def _grpc(port, tensor, name="reviews", key="text"):
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.inputs[key].CopyFrom(tensor)
    try:
        prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
        return "OK"
    except grpc.RpcError as error:
        return error.code().name
    finally:
        channel.close()


def attacks(server):
    long_text = " ".join(["unbelievably"] * 4000)[:60_000]
    rest, port = server.rest_port, server.grpc_port
    huge = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, string_val=[b"a"], tensor_shape=tensor_shape_pb2.
                                  TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=10**12)]))
    return [
        lambda: _rest(rest, {"instances": [long_text] * 60}),  # Within the limits: the costliest allowed.
        lambda: _rest(rest, b"{" * 100_000),
        lambda: _rest(rest, b"[" * 50_000 + b"]" * 50_000),
        lambda: _rest(rest, b"x", headers={"Content-Length": str(10**12)}),
        lambda: _rest(rest, {"instances": ["x"] * 100_000}),
        lambda: _rest(rest, {"instances": ["fine"]}, path="/v1/models/" + "n" * 5000 + ":predict"),
        lambda: _rest(rest, {"instances": [{"b64": base64.b64encode(_png(60_000, 60_000)).decode()}]},
                      path="/v1/models/reviews:predict"),
        lambda: _grpc(port, huge),
        lambda: _grpc(port, tf.make_tensor_proto(np.zeros((2, 2), np.float32))),
        lambda: _grpc(port, tf.make_tensor_proto([b"ok"]), name="missing\n\"model"),
        lambda: _trickle(rest),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        backbone, preprocessor = load_text_backbone(minilm_l6_offline_path(), 64)
        model = build_text_model(build_encoder(backbone, "mean"), build_head(384, 2, "classification"))
        export_text_model(model, preprocessor, LabelVocabulary.from_labels(["neg", "pos"]), folder, "reviews")
        with LocalServer(folder, grpc_port=0, rest_port=0) as server:
            server.load_all()
            rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            stop = time.perf_counter() + args.seconds
            outcomes, lock = {}, threading.Lock()

            def client(seed):
                rng = random.Random(seed)
                cases = attacks(server)
                while time.perf_counter() < stop:
                    index = rng.randrange(len(cases))
                    try:
                        outcome = cases[index]()
                    except Exception as error:  # noqa: BLE001  (a refused connection is an outcome too)
                        outcome = type(error).__name__
                    with lock:
                        outcomes[(index, outcome)] = outcomes.get((index, outcome), 0) + 1

            threads = [threading.Thread(target=client, args=(seed,)) for seed in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            started = time.perf_counter()
            status = _rest(server.rest_port, {"instances": ["great phone, works well"]})
            seconds = time.perf_counter() - started
            rss_end = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.clients} clients x {args.seconds:g} s: {sum(outcomes.values())} hostile requests")
    for (index, outcome), count in sorted(outcomes.items()):
        print(f"  attack {index:2d}: {outcome} x {count}")
    print(f"then a normal request: HTTP {status} in {seconds * 1000:.0f} ms; peak resident memory "
          f"{rss_start:.0f} MiB before, {rss_end:.0f} MiB after")
    if status != 200 or seconds >= 1.0:
        raise SystemExit("FAILED: the server did not answer a normal request within 1 s after the soak")


if __name__ == "__main__":
    main()
