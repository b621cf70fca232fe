"""serve-local's budgets beyond bytes and rows: a signature that does not
return costs one worker and its request ends at its deadline; a REST client
that trickles is cut off at the request deadline; an image's pixels are
judged from its header before anything decodes it."""

import io
import socket
import struct
import threading
import time
import zlib

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from tl_keras.serving.local_server import LocalServer, RequestLimits
from tl_keras.serving.model_repository import ModelError
from tl_keras.serving.requests import parse_predict_body


class _Spin(tf.Module):
    """Spins until the file `release` exists (or `iterations` pass): a
    signature that does not return until the test lets it."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.int64, name="iterations"),
                                  tf.TensorSpec([], tf.string, name="release")])
    def spin(self, iterations, release):
        limit = tf.reduce_max(iterations)

        def running(i, total):
            return tf.logical_and(i < limit, tf.equal(tf.size(tf.io.matching_files(release)), 0))

        _, total = tf.while_loop(running, lambda i, t: (i + 1, t + 1.0),
                                 (tf.constant(0, tf.int64), tf.constant(0.0)))
        return {"total": tf.fill(tf.shape(iterations), total)}


@pytest.fixture()
def spinning_server(tmp_path):
    module = _Spin()
    tf.saved_model.save(module, str(tmp_path / "models" / "spin" / "1"),
                        signatures={"serving_default": module.spin})
    limits = RequestLimits(request_timeout=0.5, compute_workers=2, request_deadline=1.0, read_timeout=5.0)
    release = tmp_path / "release"
    with LocalServer(tmp_path / "models", grpc_port=0, rest_port=0, limits=limits) as server:
        try:
            yield server, release
        finally:
            release.write_text("go")  # Let stuck calls end, so no worker outlives the test.
            time.sleep(0.3)


def _predict(server, iterations, release, timeout=30):
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "spin"
    request.inputs["iterations"].CopyFrom(tf.make_tensor_proto(np.array([iterations], np.int64)))
    request.inputs["release"].CopyFrom(tf.make_tensor_proto(str(release)))
    try:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=timeout)
    finally:
        channel.close()


def test_a_stuck_signature_costs_one_worker_and_its_request_ends_at_the_deadline(spinning_server):
    server, release = spinning_server
    assert _predict(server, 10, release).outputs["total"].float_val == [10.0]  # Loaded, and quick.
    started = time.perf_counter()
    with pytest.raises(grpc.RpcError) as stuck:
        _predict(server, 10**15, release)  # Until released.
    assert stuck.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "did not answer within 0.5 s" in stuck.value.details()
    assert time.perf_counter() - started < 10  # Not the signature's time: it is still running.
    assert _predict(server, 10, release).outputs["total"].float_val == [10.0]  # The other worker serves.
    with pytest.raises(grpc.RpcError):
        _predict(server, 10**15, release)
    with pytest.raises(grpc.RpcError) as busy:  # Both workers stuck: refused at once, not queued behind them.
        _predict(server, 10, release)
    assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "2 signature workers are busy" in \
        busy.value.details()
    with pytest.raises(grpc.RpcError) as short:  # The client's own deadline, shorter than the server's.
        _predict(server, 10, release, timeout=0.2)
    assert short.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED)
    release.write_text("go")
    for _ in range(100):  # The stuck calls end; their workers come back.
        try:
            assert _predict(server, 10, release).outputs["total"].float_val
            break
        except grpc.RpcError:
            time.sleep(0.1)
    else:
        pytest.fail("the workers never came back")


def test_a_trickling_rest_client_is_cut_off_at_the_request_deadline(spinning_server):
    server, _ = spinning_server
    connection = socket.create_connection(("127.0.0.1", server.rest_port))
    request = b"POST /v1/models/spin:predict HTTP/1.0\r\nContent-Length: 40\r\n\r\n" + b"{" * 40
    started, closed = time.perf_counter(), False
    try:
        for byte in request:  # One byte every 0.2 s: each read is quick, the request never whole.
            connection.sendall(bytes([byte]))
            time.sleep(0.2)
    except OSError:
        closed = True
    if not closed:
        connection.settimeout(5)
        closed = connection.recv(4096) in (b"",) or b"408" in connection.recv(4096)
    assert closed and time.perf_counter() - started < 15  # 1 s deadline, not 100 bytes x 0.2 s = 20 s.
    connection.close()


def _png_header(width, height):
    """A PNG of the given size in its header, and no pixels (a few bytes)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


@pytest.mark.parametrize("image, code, pattern", [
    (_png_header(30_000, 30_000), grpc.StatusCode.RESOURCE_EXHAUSTED, r"row 1: .*900000000 pixels|row 1 is a 30000 x"),
    (_png_header(8_000, 6_000), grpc.StatusCode.RESOURCE_EXHAUSTED, r"row 1 is a 8000 x 6000 image \(48000000 pixels"),
    (b"not an image at all", grpc.StatusCode.INVALID_ARGUMENT, r"row 1 is not a readable image"),
])
def test_image_pixels_are_judged_from_the_header_before_decoding(image, code, pattern):
    good = io.BytesIO()
    import PIL.Image
    PIL.Image.new("RGB", (4, 4)).save(good, "PNG")
    body = {"instances": [{"image_bytes": {"b64": __import__("base64").b64encode(v).decode()}}
                          for v in (good.getvalue(), image)]}
    with pytest.raises(ModelError, match=pattern) as refused:
        parse_predict_body(body, RequestLimits())
    assert refused.value.status == code
    RequestLimits().check_images("image_bytes", [good.getvalue()])  # A real image passes.
    RequestLimits().check_images("text", [b"not an image at all"])  # Only *image_bytes inputs are images.


class _Pair(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text"),
                                  tf.TensorSpec([None], tf.string, name="text_pair")])
    def join(self, text, text_pair):
        return {"joined": tf.strings.join([text, text_pair], " | ")}


def test_batched_inputs_of_different_rows_are_named_not_a_graph_error(tmp_path):
    import http.client
    import json

    module = _Pair()
    tf.saved_model.save(module, str(tmp_path / "models" / "pair" / "1"), signatures={"serving_default": module.join})
    with LocalServer(tmp_path / "models", grpc_port=0, rest_port=0) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
        body = json.dumps({"inputs": {"text": ["a", "b", "c"], "text_pair": ["x", "y"]}})
        connection.request("POST", "/v1/models/pair:predict", body, {"Content-Length": str(len(body))})
        response = connection.getresponse()
        error = json.loads(response.read())["error"]
        assert response.status == 400
        assert error == "inputs of signature 'serving_default' must have the same number of rows, received 'text' 3, " \
                        "'text_pair' 2"
        body = json.dumps({"inputs": {"text": ["a", "b"], "text_pair": ["x", "y"]}})
        connection.request("POST", "/v1/models/pair:predict", body, {"Content-Length": str(len(body))})
        assert json.loads(connection.getresponse().read())["outputs"] == ["a | x", "b | y"]


def test_a_graph_execution_error_is_reported_by_its_cause():
    from tl_keras.serving.model_repository import first_line

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def decode(data):
        return tf.io.decode_png(data[0])

    with pytest.raises(tf.errors.OpError) as raised:
        decode(tf.constant([b"not a png"]))
    line = first_line(raised.value)
    assert not line.startswith("Graph execution error") and "{{node" not in line and line


def test_an_integer_feature_past_int64_is_named():
    from tl_keras.serving.inference import examples_from_json

    with pytest.raises(ModelError, match=r"feature 'count': 99999999999999999999 does not fit an int64 feature"):
        examples_from_json({"examples": [{"count": 99999999999999999999}]})
    assert examples_from_json({"examples": [{"count": 2**63 - 1}]})


def test_the_text_of_one_input_is_bounded_in_all_its_rows():
    limits = RequestLimits(max_text_bytes=10_000)
    parse_predict_body({"instances": ["x" * 1000] * 10}, limits)  # 10,000 bytes: at the limit.
    with pytest.raises(ModelError, match=r"input None holds 10001 bytes of text in all, more than the server's "
                                         r"limit of 10000 bytes an input") as refused:
        parse_predict_body({"instances": ["x" * 1000] * 10 + ["y"]}, limits)
    assert refused.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED
