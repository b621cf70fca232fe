"""Hostile and careless input: crafted checkpoints, requests meant to take
the server down, runs that must not lose work, caches that must not lie, and
inputs checked at the edge. Each case asserts the clear error or the correct
behaviour."""

import collections
import http.client
import io
import json
import os
import pathlib
import pickle
import shutil
import socket
import struct
import subprocess
import sys
import time
import zipfile

import grpc
import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_service_pb2_grpc

from conftest import separable_sentences, tiny_bert, write_tsv
from image_data import fake_torch_modules
from tl_keras.core.settings import build_config
from tl_keras.data.texts import DataError, LabelVocabulary, read_labelled_texts
from tl_keras.models.efficientnet_lite import CheckpointError, read_torch_checkpoint
from tl_keras.export.text import export_text_model
from tl_keras.transfer.feature_cache import FeatureCache
from tl_keras.core.files import load_arrays, save_arrays, write_json
from tl_keras.cli.flags import main_with_error_line, parse_flags
from tl_keras.models.heads import build_encoder, build_head, build_text_model
from tl_keras.data.images import load_images, read_image_folder
from tl_keras.data.interactions import read_interactions, read_items
from tl_keras.serving.local_server import LocalServer, RequestLimits
from tl_keras.data.tokens import tokenize
from tl_keras.training.runs import RunConflict, RunFolder, TrainedModelKept, keep_trained_model
from tl_keras.serving.clients import GrpcClient, RestClient, ServingError
from tl_keras.tasks.text_classifier import TextClassifier
from tl_keras.workflows.text_classification import TextClassificationConfig, run
from tl_keras.training.trainer import TrainingConfig

REPO = pathlib.Path(__file__).resolve().parent.parent
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


# --- Checkpoints -------------------------------------------------------------


class _Exploit:
    """Pickles as a call of `os.system`, creating `marker` if ever run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


class _Storage:
    pass


class _Tensor:
    def __init__(self, offset, size, stride):
        self.arguments = (_STORAGE, offset, size, stride, False, collections.OrderedDict())

    def __reduce__(self):
        return _REBUILD, self.arguments


_STORAGE = _Storage()
_REBUILD = None  # torch._utils._rebuild_tensor_v2 as the fake torch modules name it; set by `_torch_names`.


def _torch_names(monkeypatch):
    storage_type, rebuild = fake_torch_modules(monkeypatch)
    global _REBUILD
    _REBUILD = rebuild
    return storage_type


def _dumps(obj, storage_type=None, elements=12):
    class Pickler(pickle.Pickler):
        def persistent_id(self, value):
            return ("storage", storage_type, "0", "cpu", elements) if value is _STORAGE else None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def _legacy(parts, storage=np.arange(12, dtype=np.float32), count=12):
    return b"".join(parts) + struct.pack("<q", count) + storage.tobytes()


def _legacy_parts(storage_type, state):
    return [pickle.dumps(LEGACY_MAGIC, protocol=2), pickle.dumps(1001, protocol=2), pickle.dumps({}, protocol=2),
            _dumps(state, storage_type), pickle.dumps(["0"], protocol=2)]


@pytest.mark.parametrize("position", range(5))
def test_legacy_checkpoint_code_in_any_pickle_is_refused(tmp_path, monkeypatch, position):
    storage_type = _torch_names(monkeypatch)
    marker = tmp_path / "pwned"
    parts = _legacy_parts(storage_type, collections.OrderedDict(w=_Tensor(0, (3, 4), (4, 1))))
    parts[position] = pickle.dumps(_Exploit(marker), protocol=2)
    (tmp_path / "evil.pth").write_bytes(_legacy(parts))
    with pytest.raises(CheckpointError, match=r"evil.pth.*(refusing to load (posix|os)\.system|not a PyTorch)"):
        read_torch_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()


def test_zip_checkpoint_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    with zipfile.ZipFile(tmp_path / "evil.pth", "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({"w": _Exploit(marker)}, protocol=2))
    with pytest.raises(CheckpointError, match="refusing to load"):
        read_torch_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()


@pytest.mark.parametrize("offset, size, stride", [(0, (4, 4), (4, 1)), (10, (3,), (1,)), (0, (2, 2), (100, 1))])
def test_views_past_their_storage_are_refused(tmp_path, monkeypatch, offset, size, stride):
    storage_type = _torch_names(monkeypatch)
    state = collections.OrderedDict(w=_Tensor(offset, size, stride))
    with zipfile.ZipFile(tmp_path / "zip.pth", "w") as archive:
        archive.writestr("archive/data.pkl", _dumps(state, storage_type))
        archive.writestr("archive/data/0", np.arange(12, dtype=np.float32).tobytes())
    (tmp_path / "legacy.pth").write_bytes(_legacy(_legacy_parts(storage_type, state)))
    for name in ("zip.pth", "legacy.pth"):
        with pytest.raises(CheckpointError, match=rf"{name}.*reaches element \d+ of storage '0', which holds 12"):
            read_torch_checkpoint(tmp_path / name)


def test_missing_and_truncated_storages_are_named(tmp_path, monkeypatch):
    storage_type = _torch_names(monkeypatch)
    state = collections.OrderedDict(w=_Tensor(0, (3, 4), (4, 1)))
    with zipfile.ZipFile(tmp_path / "zip.pth", "w") as archive:
        archive.writestr("archive/data.pkl", _dumps(state, storage_type))
    with pytest.raises(CheckpointError, match=r"zip.pth.*storage '0' is missing"):
        read_torch_checkpoint(tmp_path / "zip.pth")
    (tmp_path / "short.pth").write_bytes(_legacy(_legacy_parts(storage_type, state))[:-10])
    with pytest.raises(CheckpointError, match=r"short.pth.*storage '0' is truncated"):
        read_torch_checkpoint(tmp_path / "short.pth")
    (tmp_path / "huge.pth").write_bytes(_legacy(_legacy_parts(storage_type, state), count=10**15))
    with pytest.raises(CheckpointError, match=r"huge.pth.*declares 1000000000000000 values"):
        read_torch_checkpoint(tmp_path / "huge.pth")


def test_converter_command_ends_bad_files_with_one_error_line(tmp_path, monkeypatch):
    from tl_keras.cli.main import main as cli

    marker = tmp_path / "pwned"
    (tmp_path / "evil.pth").write_bytes(pickle.dumps(LEGACY_MAGIC, protocol=2) + pickle.dumps(_Exploit(marker)))
    (tmp_path / "blocker").write_text("a file where a folder should be")
    result = subprocess.run([sys.executable, "-m", "tl_keras.cli.main", "convert-efficientnet-lite",
                             str(tmp_path / "evil.pth"), str(tmp_path / "out")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'evil.pth'}")
    assert "Traceback" not in result.stderr and not marker.exists()
    assert cli(["convert-efficientnet-lite", str(tmp_path / "evil.pth"), str(tmp_path / "blocker" / "out")]) == 1  # Cannot write: a runtime failure.


# --- The server --------------------------------------------------------------


def _export_tiny(base, name="reviews", version=None):
    backbone, preprocessor = tiny_bert(seed=3)
    model = build_text_model(build_encoder(backbone, "mean"), build_head(32, 2, "classification"))
    return export_text_model(model, preprocessor, LabelVocabulary.from_labels(["neg", "pos"]), base, name,
                             version=version)


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("hostile_serving")
    _export_tiny(base)
    limits = RequestLimits(max_bytes=256 * 1024, max_tensor_bytes=1024 * 1024, max_rows=64, read_timeout=1.0)
    with LocalServer(base, grpc_port=0, rest_port=0, limits=limits) as server:
        yield server, base


def _raw_post(server, body, headers=None, path="/v1/models/reviews:predict"):
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection.putrequest("POST", path)
    for key, value in (headers if headers is not None else {"Content-Length": str(len(data))}).items():
        connection.putheader(key, value)
    connection.endheaders()
    connection.send(data)
    response = connection.getresponse()
    return response.status, json.loads(response.read() or b"{}")


def _still_serving(server):
    outputs = GrpcClient(f"127.0.0.1:{server.grpc_port}", "reviews", timeout=10).predict(["good phone"])
    assert outputs["probabilities"].shape == (1, 2)


@pytest.mark.parametrize("body", [
    "inputs", None, {"instances": 5}, 5, {"instances": [{"text": "a"}, {"txt": "b"}]},
    {"instances": [{"b64": "!!not base64!!"}]}, {"inputs": {"text": {"b64": 5}}}, {"inputs": [[1, 2], [3]]},
    {"instances": ["a"], "inputs": ["a"]}, {"instances": []}, {"inputs": {"text": [None, "a"]}},
    {"signature_name": 7, "inputs": ["a"]}, {"instances": [{"text": "a"}, "b"]},
])
def test_every_malformed_rest_body_gets_a_400_with_an_error(hostile_server, body):
    server, _ = hostile_server
    status, answer = _raw_post(server, body)
    assert status == 400 and isinstance(answer.get("error"), str) and answer["error"]
    _still_serving(server)


@pytest.mark.parametrize("headers, status", [
    ({"Content-Length": "abc"}, 400), ({"Content-Length": "-1"}, 400), ({}, 411),
    ({"Content-Length": str(10**9)}, 413),
])
def test_content_length_is_checked(hostile_server, headers, status):
    server, _ = hostile_server
    code, answer = _raw_post(server, b'{"instances": ["a"]}', headers)
    assert code == status and answer["error"]


def test_bad_json_and_bad_paths_answer_in_json(hostile_server):
    server, _ = hostile_server
    assert _raw_post(server, b"{nope")[0] == 400
    assert _raw_post(server, b"[" * 100_000 + b"]" * 100_000)[0] in (400, 413)
    for path in ("/v1/models/..:predict", "/v1/models/.:predict", "/v1/models/%2e%2e:predict"):
        code, answer = _raw_post(server, {"instances": ["a"]}, path=path)
        assert code == 404 and "not under" in answer["error"]


def test_too_many_rows_are_refused_quickly(hostile_server):
    server, _ = hostile_server
    started = time.perf_counter()
    code, answer = _raw_post(server, {"instances": ["a b"] * 20_000})
    assert code == 413 and "20000 rows, more than the server's limit of 64" in answer["error"]
    assert time.perf_counter() - started < 5
    with pytest.raises(ServingError, match="RESOURCE_EXHAUSTED.*more than the server's limit of 64"):
        GrpcClient(f"127.0.0.1:{server.grpc_port}", "reviews", max_batch_size=1000).predict(["a"] * 100)
    # The clients split large inputs into requests the server takes.
    outputs = RestClient(f"127.0.0.1:{server.rest_port}", "reviews", max_batch_size=50).predict(["good"] * 120)
    assert outputs["probabilities"].shape == (120, 2)


def test_stalled_bodies_are_cut_off_by_the_read_timeout(hostile_server):
    server, _ = hostile_server
    stalled = []
    for _ in range(20):
        connection = socket.create_connection(("127.0.0.1", server.rest_port))
        connection.sendall(b"POST /v1/models/reviews:predict HTTP/1.0\r\nContent-Length: 1000\r\n\r\n{")
        stalled.append(connection)
    time.sleep(1.5)
    for connection in stalled:
        connection.settimeout(5)
        reply = connection.recv(4096)
        assert reply == b"" or b"408" in reply.split(b"\r\n")[0]
        connection.close()
    _still_serving(server)


def _tensor(dtype, shape, **content):
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in shape]), **content)


@pytest.mark.parametrize("tensor, code, pattern", [
    (_tensor(types_pb2.DT_STRING, [10**9], string_val=[b"a"]), "RESOURCE_EXHAUSTED", "declares shape"),
    (_tensor(types_pb2.DT_FLOAT, [10**9]), "RESOURCE_EXHAUSTED", "declares shape"),
    (_tensor(types_pb2.DT_STRING, [3], string_val=[b"a", b"b"]), "INVALID_ARGUMENT", "holds 2 values"),
    (_tensor(types_pb2.DT_STRING, [2]), "INVALID_ARGUMENT", "holds no values"),
    (_tensor(types_pb2.DT_FLOAT, [2], tensor_content=b"\0" * 7), "INVALID_ARGUMENT", "does not fill"),
    (_tensor(types_pb2.DT_FLOAT, [1], float_val=[1.0]), "INVALID_ARGUMENT", "must be string"),
])
def test_grpc_tensors_are_checked_before_they_are_built(hostile_server, tensor, code, pattern):
    server, _ = hostile_server
    stub = prediction_service_pb2_grpc.PredictionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name="reviews"))
    request.inputs["text"].CopyFrom(tensor)
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(request, timeout=10)
    assert caught.value.code().name == code and caught.value.details()
    assert pattern in caught.value.details() or __import__("re").search(pattern, caught.value.details())
    _still_serving(server)


def test_out_of_vocabulary_token_ids_are_an_invalid_argument(hostile_server):
    server, _ = hostile_server
    client = GrpcClient(f"127.0.0.1:{server.grpc_port}", "reviews", signature="serve_tokens")
    tokens = {"token_ids": np.array([[2, 99999, 3]], np.int32), "segment_ids": np.zeros((1, 3), np.int32),
              "padding_mask": np.ones((1, 3), np.int32)}
    with pytest.raises(ServingError, match=r"INVALID_ARGUMENT: bad input for signature 'serve_tokens'"):
        client.predict(tokens)


def test_ports_are_bound_exclusively(hostile_server):
    server, base = hostile_server
    with pytest.raises(OSError, match=rf"gRPC on 127.0.0.1:{server.grpc_port}: the port is in use"):
        LocalServer(base, grpc_port=server.grpc_port, rest_port=0)
    with pytest.raises(OSError, match=rf"REST on 127.0.0.1:{server.rest_port}"):
        LocalServer(base, grpc_port=0, rest_port=server.rest_port)


def test_a_broken_newest_version_leaves_the_previous_one_serving(tmp_path):
    _export_tiny(tmp_path)
    (tmp_path / "reviews" / "2").mkdir()
    (tmp_path / "reviews" / "3").mkdir()
    (tmp_path / "reviews" / "3" / "saved_model.pb").write_bytes(b"garbage")
    _export_tiny(tmp_path / "padded", name="reviews", version=7)
    os.rename(tmp_path / "padded" / "reviews" / "7", tmp_path / "padded" / "reviews" / "00000007")
    with LocalServer(tmp_path, grpc_port=0, rest_port=0) as server:
        client = GrpcClient(f"127.0.0.1:{server.grpc_port}", "reviews")
        assert client.predict(["good phone"])["probabilities"].shape == (1, 2)
        assert client.metadata()["version"] == 1
        states = {s["version"]: s["state"] for s in client.status()}
        assert states == {1: "AVAILABLE", 2: "END", 3: "END"}
        with pytest.raises(ServingError, match=r"NOT_FOUND.*Specific\(reviews, 3\)"):
            GrpcClient(f"127.0.0.1:{server.grpc_port}", "reviews", version=3).predict(["a"])
    with LocalServer(tmp_path / "padded", grpc_port=0, rest_port=0) as server:
        client = RestClient(f"127.0.0.1:{server.rest_port}", "reviews")
        assert client.metadata()["version"] == 7
        assert client.predict(["good phone"])["probabilities"].shape == (1, 2)


# --- Runs that cannot lose work ----------------------------------------------


def _config(folder, train, preset, **changes):
    training = TrainingConfig(epochs=changes.pop("epochs", 2), batch_size=8, verbose=0,
                              head_learning_rate=changes.pop("head_learning_rate", 1e-3))
    return build_config(TextClassificationConfig, train=str(train), backbone=preset, output_dir=str(folder / "run"),
                                    strategy="partial:1", pooling="mean", sequence_length=32, distribute="none",
                                    training=training, **changes)


@pytest.mark.parametrize("export_dir, model_name, pattern", [
    ("blocker/exports", "reviews", "cannot write in"), ("exports", "../evil", "plain folder name"),
    ("exports", "..", "plain folder name"),
])
def test_export_target_is_checked_before_training(tiny_bert_preset, tmp_path, export_dir, model_name, pattern):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    train = write_tsv(tmp_path / "train.tsv", *separable_sentences(24))
    config = _config(tmp_path, train, tiny_bert_preset, export_dir=str(tmp_path / export_dir), model_name=model_name)
    started = time.perf_counter()
    with pytest.raises((OSError, ValueError), match=pattern):
        run(config)
    assert time.perf_counter() - started < 2  # No backbone was loaded, nothing trained.
    assert not (tmp_path / "run" / "metrics.json").exists()


class _ExportFolderTakenAfterTraining(keras.callbacks.Callback):
    """The disk changes under a live run: once training ends, a file stands
    where the export folder was."""

    def __init__(self, folder):
        super().__init__()
        self.folder = folder

    def on_train_end(self, logs=None):
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.write_text("a file where a folder should be")


def test_an_export_failing_after_training_keeps_the_trained_weights(tiny_bert_preset, tmp_path):
    texts, labels = separable_sentences(24)
    train = write_tsv(tmp_path / "train.tsv", texts, labels)
    exports = tmp_path / "exports"
    config = _config(tmp_path, train, tiny_bert_preset, export_dir=str(exports), model_name="reviews")
    kept = tmp_path / "run" / "model.weights.h5"
    with pytest.raises(TrainedModelKept, match=rf"^export failed \(.*\); the trained weights are kept in {kept}"):
        run(config, callbacks=[_ExportFolderTakenAfterTraining(exports)])
    assert (tmp_path / "run" / "metrics.json").exists()  # The reports were written before the export.

    def classifier():
        keras.utils.set_random_seed(config.training.seed)
        return TextClassifier.from_preset(tiny_bert_preset, labels=sorted(set(labels)), strategy="partial:1",
                                          sequence_length=32, pooling="mean")

    untrained, restored = classifier(), classifier()
    restored.load_weights(str(kept))
    changed = [not np.array_equal(a, b) for a, b in zip(untrained.get_weights(), restored.get_weights())]
    assert any(changed) and len(changed) == len(restored.get_weights())


def test_late_failures_save_the_weights_once_and_keep_the_first_error(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(TrainedModelKept) as raised:
        with keep_trained_model(model, tmp_path, "export"):
            with keep_trained_model(model, tmp_path, "writing the reports"):
                raise ValueError("plot failed: no font\n  at line 3")
    assert str(raised.value).startswith("writing the reports failed (plot failed: no font); the trained weights")
    assert len(str(raised.value).splitlines()) == 1  # The command line shows one line: the kept file is in it.
    assert isinstance(raised.value.__cause__, ValueError)
    restored = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    restored.load_weights(str(tmp_path / "model.weights.h5"))
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), restored.get_weights()))
    with pytest.raises(ValueError, match="no model"):  # Nothing to keep: the error passes as it is.
        with keep_trained_model(None, tmp_path / "other", "export"):
            raise ValueError("no model")
    assert not (tmp_path / "other").exists()


class _StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt  # After BackupAndRestore saved the epoch.


def test_a_restart_with_other_data_or_settings_stops_naming_the_change(tiny_bert_preset, tmp_path):
    train = write_tsv(tmp_path / "train.tsv", *separable_sentences(24))
    with pytest.raises(KeyboardInterrupt):
        run(_config(tmp_path, train, tiny_bert_preset), callbacks=[_StopAfterFirstEpoch()])
    with pytest.raises(RunConflict, match=r"head_learning_rate: 0.001 -> 0.01.*--fresh"):
        run(_config(tmp_path, train, tiny_bert_preset, head_learning_rate=1e-2))
    write_tsv(train, *separable_sentences(24, seed=5))
    with pytest.raises(RunConflict, match=r"train: .*train.tsv \(content \w+\) -> .*train.tsv \(content \w+\)"):
        run(_config(tmp_path, train, tiny_bert_preset))
    result = run(_config(tmp_path, train, tiny_bert_preset, fresh=True))
    assert result.history["phase"] == ["partial"] * 2  # Started afresh: both epochs trained.


def test_one_live_run_a_folder(tiny_bert_preset, tmp_path):
    train = write_tsv(tmp_path / "train.tsv", *separable_sentences(24))
    with RunFolder(tmp_path / "run"):
        with pytest.raises(RunConflict, match=r"run is in use by a live run \(pid \d+\)"):
            run(_config(tmp_path, train, tiny_bert_preset))
    assert run(_config(tmp_path, train, tiny_bert_preset, epochs=1)).metrics["test"]["examples"] > 0


_RACER = """
import sys, tensorflow as tf
sys.path.insert(0, {repo!r})
from tl_keras.export.saved_model import export_module
class Half(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def serve(self, x):
        return {{"y": x * 0.5}}
module = Half()
while __import__("time").time() < {start}:
    pass
for _ in range(3):
    print(export_module(module, {{"serving_default": module.serve}}, {base!r}, "half").name, flush=True)
"""


def test_two_processes_exporting_at_once_get_distinct_versions(tmp_path):
    start = time.time() + 12
    script = _RACER.format(repo=str(REPO), start=start, base=str(tmp_path))
    racers = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for _ in range(2)]
    outputs = [racer.communicate(timeout=120) for racer in racers]
    assert all(racer.returncode == 0 for racer in racers), [err[-500:] for _, err in outputs]
    versions = sorted(int(line) for out, _ in outputs for line in out.split())
    assert versions == [1, 2, 3, 4, 5, 6]
    for version in versions:
        folder = tmp_path / "half" / str(version)
        assert json.loads((folder / "model_card.json").read_text())["version"] == version
        assert (folder / "saved_model.pb").is_file()
    assert not [p for p in (tmp_path / "half").iterdir() if p.name.startswith(".")]


# --- Caches that cannot lie --------------------------------------------------


def test_tampered_or_truncated_caches_are_removed_and_recomputed(tmp_path):
    backbone, preprocessor = tiny_bert(seed=4)
    encoder = build_encoder(backbone, "mean")
    texts = ["good phone", "bad case", "great battery"]
    tokens = tokenize(texts, preprocessor, verbose=0, cache_dir=tmp_path / "tokens")
    cache = FeatureCache(tmp_path / "features")
    expected = cache.features(encoder, tokens, verbose=0)
    (feature_file,) = (tmp_path / "features").glob("*.npz")
    (token_file,) = (tmp_path / "tokens").glob("*.npz")
    key = feature_file.stem
    with np.load(feature_file) as stored:  # Valid numbers, the right key, a stale checksum.
        np.savez(feature_file, features=stored["features"] + 1, __key__=stored["__key__"],
                 __checksum__=stored["__checksum__"])
    with pytest.warns(UserWarning, match=rf"{feature_file}: its content does not match its checksum"):
        np.testing.assert_array_equal(FeatureCache(tmp_path / "features").features(encoder, tokens, verbose=0),
                                      expected)
    token_file.write_bytes(token_file.read_bytes()[:50])
    with pytest.warns(UserWarning, match=rf"{token_file}: unreadable"):
        again = tokenize(texts, preprocessor, verbose=0, cache_dir=tmp_path / "tokens")
    np.testing.assert_array_equal(again.arrays["token_ids"], tokens.arrays["token_ids"])
    other = tmp_path / "features" / "other.npz"
    save_arrays(other, "somebody-else", {"features": expected})
    with pytest.warns(UserWarning, match="made for key somebody-else"):
        assert load_arrays(other, key) is None
    assert not other.exists()


# --- Inputs checked at the edge ----------------------------------------------


@pytest.mark.parametrize("content, pattern", [
    ('text,label\n"great phone,1\nbad phone,0\n', r"bad.csv:2: a quoted field starts here and never ends"),
    ('text,label\n"great phone,1\nbad phone",0\nok,1\n', r"bad.csv:2: a quoted field runs from line 2 to 3"),
    ("text,label\ngreat phone,1,extra\n", r"bad.csv:2: 3 field\(s\) where the header has 2"),
    ("text,label\ngreat phone\n", r"bad.csv:2: 1 field\(s\)"),
])
def test_csv_is_parsed_strictly(tmp_path, content, pattern):
    (tmp_path / "bad.csv").write_text(content)
    with pytest.raises(DataError, match=pattern):
        read_labelled_texts(tmp_path / "bad.csv")


def test_bom_is_stripped_and_json_text_must_be_a_string(tmp_path):
    (tmp_path / "bom.csv").write_bytes("\ufefftext,label\ngreat phone,1\nbad,0\n".encode())
    assert read_labelled_texts(tmp_path / "bom.csv").texts == ["great phone", "bad"]
    (tmp_path / "list.jsonl").write_text('{"text": ["a", "b"], "label": "1"}\n')
    with pytest.raises(DataError, match=r"list.jsonl:1: column 'text' must hold a string, received list"):
        read_labelled_texts(tmp_path / "list.jsonl")
    (tmp_path / "nan.jsonl").write_text('{"text": "a", "label": NaN}\n')
    with pytest.raises(DataError, match=r"nan.jsonl:1: column 'label' must be finite, received nan"):
        read_labelled_texts(tmp_path / "nan.jsonl")
    (tmp_path / "number.jsonl").write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n')
    assert read_labelled_texts(tmp_path / "number.jsonl").labels == ["1", "0"]


def test_unsupported_image_files_are_named_or_counted(tmp_path):
    import skimage.data

    for label in ("cat", "dog"):
        (tmp_path / label).mkdir()
        tf.io.write_file(str(tmp_path / label / "a.png"), tf.io.encode_png(skimage.data.chelsea()[:64, :64]))
    (tmp_path / "dog" / "b.webp").write_bytes(b"RIFF....WEBP")
    rows = read_image_folder(tmp_path)
    with pytest.raises(DataError, match=r"b.webp: unsupported image type '.webp'"):
        load_images(rows, (32, 32), verbose=0)
    pixels, kept, skipped = load_images(rows, (32, 32), skip_bad_images=True, verbose=0)
    assert len(kept) == 2 and [origin for origin, _ in skipped] == [str(tmp_path / "dog" / "b.webp")]


def test_nan_timestamps_are_refused_and_json_never_holds_nan(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,text\na,kettle\nb,mug\n")
    (tmp_path / "clicks.csv").write_text("user_id,item_id,timestamp\nu,a,1\nu,b,nan\n")
    with pytest.raises(DataError, match=r"clicks.csv:3: timestamp must be a finite number, received 'nan'"):
        read_interactions(tmp_path / "clicks.csv", read_items(tmp_path / "items.csv"))
    write_json(tmp_path / "m.json", {"a": float("nan"), "b": [np.float32("inf"), 1.5]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [None, 1.5]}


def test_sequence_length_past_the_backbone_limit_is_refused(tiny_bert_preset):
    from tl_keras.models.backbones import load_text_backbone

    with pytest.raises(ValueError, match=r"`sequence_length` 128 exceeds the backbone's maximum of 64"):
        load_text_backbone(tiny_bert_preset, 128)


def _recipe(name):
    sys.path.insert(0, str(REPO / "recipes"))
    return __import__(name)


@pytest.mark.parametrize("recipe, flags, pattern", [
    ("continued_pretraining", ["--texts", "x.txt", "--output-preset", "p", "--mask-rate", "0"],
     r"`mask_rate` must be a number in \(0, 1\), received 0.0"),
    ("continued_pretraining", ["--texts", "x.txt", "--output-preset", "p", "--mask-rate", "1.5"],
     r"`mask_rate` must be a number in \(0, 1\), received 1.5"),
    ("domain_adaptation", ["--alpha", "-5"], r"`alpha` must be a number > 0, received -5.0"),
    ("model_fusion", ["--ingredients", "0"], r"`ingredients` must be an integer >= 1, received 0"),
    ("text_classification", ["--epochs", "0"], r"`epochs` must be an integer >= 1, received 0"),
    ("text_classification", ["--dropout", "1.5"], r"`dropout` must be a number in \[0, 1\), received 1.5"),
    ("recommendation", ["--temperature", "0"], r"`temperature` must be a number > 0, received 0.0"),
])
def test_numeric_flags_are_range_checked_in_one_error_line(recipe, flags, pattern, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.txt").write_text("some text\n")
    module = _recipe(recipe)
    assert main_with_error_line(module.main, flags + ["--backbone", "unused"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert __import__("re").search(pattern, err[0]), err[0]


def test_yaml_numbers_are_read_as_the_fields_types(tmp_path):
    (tmp_path / "run.yaml").write_text("head_learning_rate: 1e-3\nepochs: 2\nresume: no\n")
    settings = parse_flags("", TextClassificationConfig, ["--config", str(tmp_path / "run.yaml")])
    assert settings["head_learning_rate"] == 1e-3 and isinstance(settings["head_learning_rate"], float)
    assert settings["epochs"] == 2 and settings["resume"] is False
    (tmp_path / "bad.yaml").write_text("epochs: three\n")
    with pytest.raises(ValueError, match=r"bad.yaml: epochs must be an integer, received 'three'"):
        parse_flags("", TextClassificationConfig, ["--config", str(tmp_path / "bad.yaml")])


def test_recipe_errors_are_one_line_without_traceback_unless_debug(tmp_path):
    (tmp_path / "bad.csv").write_text("text,label\ngreat,1,2\n")
    command = [sys.executable, str(REPO / "recipes" / "text_classification.py"), "--train", str(tmp_path / "bad.csv"),
               "--output-dir", str(tmp_path / "run"), "--backbone", "unused"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (f"error: {tmp_path / 'bad.csv'}:2: 3 field(s) where the "
                                                      "header has 2 ['text', 'label']: ['great', '1', '2']")
    assert "Traceback" not in result.stderr
    debug = subprocess.run(command + ["--debug"], capture_output=True, text=True)
    assert debug.returncode == 2 and "Traceback" in debug.stderr
