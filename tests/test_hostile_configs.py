"""Hostile configs, folder names and metric labels: bounded settings files,
quoted TF Serving configs, int64 versions, duplicate models refused, metric
labels escaped and kept for served models only."""

import http.client
import json
import os

import pytest
import tensorflow as tf

from tl_keras.cli.flags import read_settings_file
from tl_keras.export.saved_model import export_module
from tl_keras.serving.kit import serving_config
from tl_keras.serving.local_server import LocalServer
from tl_keras.serving.metrics import RequestMetrics, label_value
from tl_keras.serving.model_repository import ModelRepository, models_from_config
from tl_keras.serving.tf_serving_files import message_class, parse_text_proto


class Doubler(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        return {"y": 2.0 * x}


def _export(base, name="doubler"):
    module = Doubler()
    return export_module(module, {"serving_default": module.serve}, base, name)


@pytest.mark.parametrize("content, pattern", [
    ('a: &a ["x", "x"]\nb: &b [*a, *a]\nc: [*b, *b]\n', "anchors and aliases are not allowed"),
    ("epochs: " + "[" * 5000 + "]" * 5000 + "\n", r"single values, not nested lists or mappings \(line 1\)"),
    ("epochs: 3\nshares: [0.6, 0.9]\n", r"single values, not nested lists or mappings \(line 2\)"),
    ("epochs: " + "9" * 5000 + "\n", "Exceeds the limit .* for integer string conversion"),
    ("epochs: 3\n  bad: indent: here\n", "cannot read the settings"),
])
def test_settings_files_are_read_within_bounds(tmp_path, content, pattern):
    path = tmp_path / "run.yaml"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"^{path}: .*{pattern}"):
        read_settings_file(path)


def test_settings_files_must_be_small_regular_files(tmp_path):
    with pytest.raises(ValueError, match="/dev/zero: not a regular file"):
        read_settings_file("/dev/zero")
    os.mkfifo(tmp_path / "fifo.yaml")
    with pytest.raises(ValueError, match="fifo.yaml: not a regular file"):
        read_settings_file(tmp_path / "fifo.yaml")  # Reading it would wait for a writer forever.
    (tmp_path / "big.yaml").write_text("# " + "x" * (1024 * 1024) + "\n")
    with pytest.raises(ValueError, match="big.yaml: 1048579 bytes; a settings file holds at most 1048576"):
        read_settings_file(tmp_path / "big.yaml")
    (tmp_path / "ok.yaml").write_text("epochs: 2\nhead_learning_rate: 1e-3\n")
    assert read_settings_file(tmp_path / "ok.yaml") == {"epochs": 2, "head_learning_rate": "1e-3"}


def test_serving_config_values_cannot_break_out_of_their_field(tmp_path):
    (tmp_path / "reviews" / "1").mkdir(parents=True)
    (tmp_path / "reviews" / "1" / "saved_model.pb").write_bytes(b"")
    base = '/models" }\n  config { name: "evil'
    config = parse_text_proto("models", serving_config(tmp_path, base=base), "models.config")
    assert [(entry.name, entry.base_path) for entry in config.model_config_list.config] == [
        ("reviews", base + "/reviews")]


def test_a_config_listing_a_model_twice_is_refused_as_tf_serving_refuses_it():
    config = message_class("models")()
    for _ in range(2):
        entry = config.model_config_list.config.add()
        entry.name, entry.base_path = "reviews", "/models/reviews"
    from tensorflow_serving.config import model_server_config_pb2

    with pytest.raises(ValueError, match="Illegal to list model reviews multiple times in config list"):
        models_from_config(model_server_config_pb2.ModelServerConfig.FromString(config.SerializeToString()))


def test_a_version_folder_beyond_int64_is_not_a_version(tmp_path):
    _export(tmp_path)
    (tmp_path / "doubler" / "99999999999999999999").mkdir()
    repository = ModelRepository(tmp_path)
    assert list(repository.version_folders("doubler")) == [1]
    version, _ = repository.resolve("doubler")
    assert version == 1 and repository.statuses("doubler")[0][0] == 1


def test_metric_labels_are_escaped_and_kept_for_served_models_only(tmp_path):
    metrics = RequestMetrics()
    metrics.record('evil"} 1\n:tensorflow:serving:request_count{model_name="x', "predict", "OK", 0.01)
    page = metrics.prometheus()
    assert len([line for line in page.splitlines() if line.startswith(":tensorflow:serving:request_count{")]) == 1
    assert label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    _export(tmp_path)
    with LocalServer(tmp_path, grpc_port=0, rest_port=0) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
        for name in ["doubler"] + [f"nobody{i}" for i in range(50)]:
            connection.request("POST", f"/v1/models/{name}:predict", body=json.dumps({"instances": [1.0]}))
            connection.getresponse().read()
        connection.request("GET", "/monitoring/prometheus/metrics")
        page = connection.getresponse().read().decode()
    assert 'model_name="doubler"' in page and "nobody" not in page
    assert len([line for line in page.splitlines() if line.startswith(":tensorflow:serving:request_count{")]) == 1


def test_serve_local_refuses_missing_folders_and_replays_warmup_at_load(tmp_path):
    from tl_keras.serving.model_repository import ServedModel, replay_warmup

    with pytest.raises(ValueError, match=f"{tmp_path / 'nowhere'}: no such folder of exported models"):
        LocalServer(tmp_path / "nowhere", grpc_port=0, rest_port=0)
    with pytest.raises(ValueError, match=r"base path of model reviews \(.*absent\) is not a folder"):
        LocalServer(models=[ServedModel("reviews", tmp_path / "absent")], grpc_port=0, rest_port=0)
    module = Doubler()
    version = export_module(module, {"serving_default": module.serve}, tmp_path, "doubler",
                            warmup_requests=[{"x": [1.0, 2.0]}, {"x": [3.0]}])
    assert replay_warmup(tf.saved_model.load(str(version)), version) == 2
    server = LocalServer(tmp_path, grpc_port=0, rest_port=0)
    assert server.load_all() == {"doubler": [1]}
    # A warm-up request the signature cannot run fails the load, as in TF Serving.
    from tl_keras.export.saved_model import write_warmup_requests

    write_warmup_requests(version / "assets.extra" / "tf_serving_warmup_requests", "doubler", [{"y": [1.0]}])
    assert ModelRepository(tmp_path).served_versions("doubler") == []


class Lengths(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    def serve(self, text):
        return {"length": tf.strings.length(text)}


def test_a_string_past_the_limit_is_refused_before_the_graph_runs(tmp_path):
    from tl_keras.serving.clients import GrpcClient, RestClient, ServingError
    from tl_keras.serving.requests import RequestLimits

    module = Lengths()
    export_module(module, {"serving_default": module.serve}, tmp_path, "lengths")
    limits = RequestLimits(max_string_bytes=1000)
    with LocalServer(tmp_path, grpc_port=0, rest_port=0, limits=limits) as server:
        rest = RestClient(f"127.0.0.1:{server.rest_port}", "lengths")
        assert rest.predict(["x" * 1000])["length"].tolist() == [1000]
        with pytest.raises(ServingError, match="HTTP 413: input 'text' holds a string of 1001 bytes, more than the "
                                               "server's limit of 1000 bytes a value"):
            rest.predict(["short", "x" * 1001])
        grpc_client = GrpcClient(f"127.0.0.1:{server.grpc_port}", "lengths")
        with pytest.raises(ServingError, match="RESOURCE_EXHAUSTED: input 'text' holds a string of 3000 bytes"):
            grpc_client.predict(["é" * 1500])


@pytest.mark.parametrize("flags, message", [
    (["train-text", "--train", "x.csv", "--pair-column", "label"], "`pair_column` 'label' must differ"),
    (["train-text", "--train", "x.csv", "--pair-column", "text"], "`pair_column` 'text' must differ"),
    (["train-text", "--train", "x.csv", "--validation-fraction", "0.6", "--test-fraction", "0.5"],
     r"`validation_fraction` \+ `test_fraction` must be < 1"),
    (["train-qa", "--train", "x.json", "--no-answer-threshold", "nan"], "`no_answer_threshold` must be a number"),
    (["distill"], r"missing required setting\(s\): --teacher, --train"),
])
def test_setting_combinations_are_refused_in_one_line(flags, message, capsys):
    from tl_keras.cli.main import main

    assert main(flags) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and __import__("re").search(message, err[0]), err


@pytest.mark.parametrize("rows, empty", [(2, "validation and no test"), (6, "validation")])
def test_splits_that_leave_a_part_empty_are_refused_before_training(tmp_path, rows, empty):
    from tl_keras.core.settings import build_config
    from tl_keras.data.texts import DataError
    from tl_keras.workflows.configs import TextClassificationConfig
    from tl_keras.workflows.text_classification import run

    words = ["great", "bad", "fine", "awful", "nice", "poor"]
    (tmp_path / "small.tsv").write_text("".join(f"{words[i]} phone\t{i % 2}\n" for i in range(rows)))
    config = build_config(TextClassificationConfig, train=str(tmp_path / "small.tsv"), backbone="never-loaded",
                          output_dir=str(tmp_path / "run"))
    with pytest.raises(DataError, match=rf"small.tsv: {rows} rows leave no {empty} rows after holding out"):
        run(config)


def test_a_batch_larger_than_the_training_rows_is_said(tiny_bert_preset, tmp_path, capsys):
    from conftest import separable_sentences, write_tsv

    from tl_keras.core.settings import build_config
    from tl_keras.workflows.configs import TextClassificationConfig
    from tl_keras.workflows.text_classification import run

    train = write_tsv(tmp_path / "train.tsv", *separable_sentences(30))
    run(build_config(TextClassificationConfig, train=str(train), backbone=tiny_bert_preset, strategy="frozen",
                     output_dir=str(tmp_path / "run"), sequence_length=16, epochs=1, batch_size=64, verbose=0,
                     resume=False))
    assert "note: the global batch of 64 is more than the 22 training rows" in capsys.readouterr().out


def test_an_unbalanced_csv_quote_is_named_where_it_opens(tmp_path):
    from tl_keras.data.texts import DataError, read_labelled_texts

    (tmp_path / "bad.csv").write_text('text,label\n"great phone,1\nbad,0\nok,1\n')
    with pytest.raises(DataError, match=r"bad.csv:2: a quoted field starts here and never ends"):
        read_labelled_texts(tmp_path / "bad.csv")


@pytest.mark.parametrize("card, pattern", [("{not json", "not a readable model card"),
                                           ("[1, 2]", "a model card is a JSON object, received list")])
def test_a_bad_model_card_is_named(tmp_path, card, pattern):
    from tl_keras.serving.kit import exported_models

    version = tmp_path / "exports" / "reviews" / "1"
    version.mkdir(parents=True)
    (version / "saved_model.pb").write_bytes(b"")
    (version / "model_card.json").write_text(card)
    with pytest.raises(ValueError, match=rf"model_card.json: {pattern}"):
        exported_models(tmp_path / "exports")
