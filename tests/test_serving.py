"""gRPC and REST clients against a real in-process gRPC/HTTP server that loads
the TF Serving layout."""

import json
import socket

import numpy as np
import pytest
import tensorflow as tf

from conftest import tiny_bert
from tl_keras.cli.main import main as cli
from tl_keras.data.texts import LabelVocabulary
from tl_keras.export.text import export_text_model
from tl_keras.models.heads import build_encoder, build_head, build_text_model
from tl_keras.serving.local_server import LocalServer
from tl_keras.serving.clients import GrpcClient, RestClient, ServingError

TEXTS = ["good phone", "the battery was bad and the case is broken"]


def _export(base, seed, version=None):
    backbone, preprocessor = tiny_bert(seed=seed)
    model = build_text_model(build_encoder(backbone, "mean"), build_head(32, 2, "classification"))
    return export_text_model(model, preprocessor, LabelVocabulary.from_labels(["neg", "pos"]), base, "reviews",
                             version=version)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("serving")
    _export(base, seed=11)
    with LocalServer(base, grpc_port=0, rest_port=0, max_request_bytes=64 * 1024,
                     version_labels={"reviews": {"stable": 1}}) as running:
        yield running, base


def _expected(base, version, texts=TEXTS):
    loaded = tf.saved_model.load(str(base / "reviews" / str(version)))
    return loaded.signatures["serving_default"](text=tf.constant(texts))


def _clients(server, **kwargs):
    running, _ = server
    return [GrpcClient(f"127.0.0.1:{running.grpc_port}", "reviews", **kwargs),
            RestClient(f"127.0.0.1:{running.rest_port}", "reviews", **kwargs)]


def test_both_clients_get_the_saved_models_answers(server):
    expected = _expected(server[1], 1)
    for client in _clients(server, version=1):
        outputs = client.predict(TEXTS)
        np.testing.assert_allclose(outputs["probabilities"], expected["probabilities"].numpy(), atol=1e-6)
        assert list(outputs["label"]) == [l.decode() for l in expected["label"].numpy()]
        assert list(outputs["label_id"]) == expected["label_id"].numpy().tolist()


def test_metadata_and_status(server):
    for client in _clients(server, version_label="stable"):
        metadata = client.metadata()
        assert metadata["version"] == 1
        assert metadata["signatures"]["serving_default"]["inputs"] == {"text": {"dtype": "string", "shape": [-1]}}
        assert set(metadata["signatures"]["serving_default"]["outputs"]) == {"probabilities", "label_id", "label"}
        assert "serve_tokens" in metadata["signatures"]
        assert client.status() == [{"version": 1, "state": "AVAILABLE", "error_code": 0, "error_message": ""}]


def test_newest_version_is_picked_up_when_it_appears(server):
    _, base = server
    _export(base, seed=12, version=2)
    try:
        expected = _expected(base, 2)
        for client in _clients(server):
            assert client.metadata()["version"] == 2
            np.testing.assert_allclose(client.predict(TEXTS)["probabilities"], expected["probabilities"].numpy(), atol=1e-6)
            assert [s["version"] for s in client.status()] == [2]  # TF Serving's default policy: latest 1.
        for client in _clients(server, version=1):  # Version 1 is unloaded, as TF Serving unloads it.
            with pytest.raises(ServingError, match=r"Specific\(reviews, 1\)"):
                client.predict(TEXTS)
    finally:
        import shutil
        shutil.rmtree(base / "reviews" / "2")


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_server_down_fails_fast_naming_the_address():
    port = _free_port()
    for client in (GrpcClient(f"127.0.0.1:{port}", "reviews", timeout=3),
                   RestClient(f"127.0.0.1:{port}", "reviews", timeout=3)):
        with pytest.raises(ServingError, match=rf"127.0.0.1:{port} model 'reviews' signature 'serving_default'"):
            client.predict(TEXTS)


@pytest.mark.parametrize("kwargs, predict_kwargs, pattern", [
    ({"model_name": "nope"}, {}, r"model 'nope'.*(NOT_FOUND|HTTP 404).*Latest\(nope\).*'nope' is not under"),
    ({"model_name": "reviews", "version": 9}, {}, r"model 'reviews' version 9.*Specific\(reviews, 9\).*have \[1\]"),
    ({"model_name": "reviews", "signature": "serve_pictures"}, {}, r"signature 'serve_pictures'.*not found"),
    ({"model_name": "reviews"}, {"input_name": "sentence"}, r"input names \['sentence'\] do not match.*\['text'\]"),
])
def test_bad_requests_name_model_and_signature(server, kwargs, predict_kwargs, pattern):
    running, _ = server
    name = kwargs.pop("model_name")
    for client in (GrpcClient(f"127.0.0.1:{running.grpc_port}", name, **kwargs),
                   RestClient(f"127.0.0.1:{running.rest_port}", name, **kwargs)):
        with pytest.raises(ServingError, match=pattern):
            client.predict(TEXTS, **predict_kwargs)


def test_too_large_requests_fail_on_client_and_on_server(server):
    running, _ = server
    big = ["word " * 20_000]
    for client in _clients(server, max_request_bytes=1024):
        with pytest.raises(ServingError, match=r"request of \d+ bytes is larger than the 1024-byte limit"):
            client.predict(big)
    # A client allowed to send it meets the server's own 64 KiB limit.
    for client, pattern in ((GrpcClient(f"127.0.0.1:{running.grpc_port}", "reviews", max_request_bytes=10**7),
                             r"RESOURCE_EXHAUSTED"),
                            (RestClient(f"127.0.0.1:{running.rest_port}", "reviews", max_request_bytes=10**7),
                             r"HTTP 413")):
        with pytest.raises(ServingError, match=pattern):
            client.predict(big)


def test_cli_predict_prints_one_json_line_a_text(server, capsys):
    running, base = server
    assert cli(["predict", "--address", f"127.0.0.1:{running.grpc_port}", "--model", "reviews", *TEXTS]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["text"] for line in lines] == TEXTS
    assert [line["label"] for line in lines] == [l.decode() for l in _expected(base, 1)["label"].numpy()]
    assert cli(["predict", "--rest", f"127.0.0.1:{running.rest_port}", "--model", "nope", "x"]) == 1  # A runtime failure, not a usage error.
    assert "REST 127.0.0.1" in capsys.readouterr().err


def test_generated_config_serves_what_was_exported(server, tmp_path):
    import http.client

    from tl_keras.serving.kit import serving_config
    from tl_keras.serving.model_repository import read_model_config
    from tl_keras.serving.tf_serving_files import check_export

    running, base = server
    config = serving_config(base, base=str(base))
    assert config.count("config {") == 1 and f'base_path: "{base}/reviews"' in config
    assert "per-model batching" in config
    assert check_export(base / "reviews" / "1").pad_variable_length_inputs  # As TF Serving parses it.
    (tmp_path / "models.config").write_text(config)
    with LocalServer(models=read_model_config(tmp_path / "models.config"), grpc_port=0, rest_port=0) as local:
        connection = http.client.HTTPConnection("127.0.0.1", local.rest_port, timeout=30)
        connection.request("POST", "/v1/models/reviews:predict", body=json.dumps({"instances": ["Great phone"]}))
        answer = json.loads(connection.getresponse().read())  # The README's curl example.
        assert set(answer["predictions"][0]) == {"probabilities", "label_id", "label"}
        grpc_labels = GrpcClient(f"127.0.0.1:{local.grpc_port}", "reviews").predict(["Great phone"])["label"]
        assert list(grpc_labels) == [answer["predictions"][0]["label"]]
    assert cli(["serving-config", str(tmp_path / "empty")]) == 2
