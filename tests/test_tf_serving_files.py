"""Every file tl_keras writes for TF Serving, parsed with TF Serving's own
protos (vendored, compiled here) as its loaders parse them."""

import json
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from tl_keras.export.saved_model import BATCHING_PARAMETERS, export_module, write_warmup_requests
from tl_keras.serving.kit import serving_config
from tl_keras.serving.model_repository import ModelError, ModelRepository
from tl_keras.serving.tf_serving_files import (
    ServingFileError,
    check_export,
    check_kit,
    check_warmup,
    main,
    parse_text_proto,
)

KIT = pathlib.Path(__file__).parents[1] / "export"


class Doubler(tf.Module):
    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        return {"y": 2.0 * x}


def _export(base, batching=True):
    module = Doubler()
    return export_module(module, {"serving_default": module.serve}, base, "doubler",
                         warmup_requests=[{"x": np.array([1.0], np.float32)}], batching=batching)


def test_the_export_batching_file_parses_as_batching_parameters():
    parameters = parse_text_proto("batching", BATCHING_PARAMETERS, "batching_params.pbtxt")
    assert parameters.pad_variable_length_inputs is True
    assert parameters.max_execution_batch_size.value == 32 and parameters.enable_large_batch_splitting.value
    assert parameters.max_batch_size.value >= parameters.max_execution_batch_size.value


def test_the_old_batching_text_is_refused_as_tf_serving_refuses_it():
    # The plain bool written as a wrapper message: TF Serving's "7:28 : ... Expected ":"".
    old = BATCHING_PARAMETERS.replace("pad_variable_length_inputs: true", "pad_variable_length_inputs { value: true }")
    with pytest.raises(ServingFileError, match=r'batching_params.pbtxt:7:28 .*Expected ":"'):
        parse_text_proto("batching", old, "batching_params.pbtxt")
    with pytest.raises(ServingFileError, match="no field named \"max_batch_sise\"|max_batch_sise"):
        parse_text_proto("batching", "max_batch_sise { value: 3 }", "x.pbtxt")


def test_the_rules_applied_after_parsing():
    with pytest.raises(ServingFileError, match="last entry was 16, expected 32"):
        parse_text_proto("batching", "max_batch_size { value: 32 }\nallowed_batch_sizes: 8\nallowed_batch_sizes: 16",
                         "b.pbtxt")
    with pytest.raises(ServingFileError, match="needs enable_large_batch_splitting"):
        parse_text_proto("batching", "max_execution_batch_size { value: 4 }", "b.pbtxt")


def test_the_kit_files_parse():
    assert check_kit(KIT) == ["models.config", "monitoring.config", "batching_parameters.txt"]
    monitoring = parse_text_proto("monitoring", (KIT / "monitoring.config").read_text(), "monitoring.config")
    assert monitoring.prometheus_config.enable and monitoring.prometheus_config.path == "/monitoring/prometheus/metrics"


def test_a_generated_models_config_parses_as_model_server_config(tmp_path):
    for name, card in (("reviews", {"task": "classification", "server_batching": True}), ("shop", {})):
        version = tmp_path / name / "3"
        version.mkdir(parents=True)
        (version / "saved_model.pb").write_bytes(b"")
        (version / "model_card.json").write_text(json.dumps(card))
    config = parse_text_proto("models", serving_config(tmp_path), "models.config")
    entries = config.model_config_list.config
    assert [(e.name, e.base_path, e.model_platform) for e in entries] == [
        ("reviews", "/models/reviews", "tensorflow"), ("shop", "/models/shop", "tensorflow")]
    assert all(e.model_version_policy.latest.num_versions == 1 for e in entries)


def test_an_export_passes_and_the_command_checks_it(tmp_path, capsys):
    folder = _export(tmp_path)
    assert check_export(folder).max_execution_batch_size.value == 32
    assert check_warmup(folder / "assets.extra" / "tf_serving_warmup_requests") == 1
    assert main([str(KIT), str(tmp_path)]) == 0
    assert f"ok  {folder} (with batching_params.pbtxt)" in capsys.readouterr().out
    (folder / "batching_params.pbtxt").write_text("pad_variable_length_inputs { value: true }\n")
    assert main([str(tmp_path)]) == 1
    assert "batching_params.pbtxt:1:28" in capsys.readouterr().err


def test_warmup_records_tf_serving_would_not_replay_are_refused(tmp_path):
    path = tmp_path / "tf_serving_warmup_requests"
    write_warmup_requests(path, "m", [{"x": np.array([1.0], np.float32)}] * 1001)
    with pytest.raises(ServingFileError, match="1001 warm-up records; TF Serving takes at most 1000"):
        check_warmup(path)
    path.write_bytes(b"not a tfrecord file at all")
    with pytest.raises(ServingFileError, match="record 1 is not a PredictionLog"):
        check_warmup(path)


def test_serve_local_refuses_a_version_whose_batching_file_tf_serving_refuses(tmp_path):
    good = _export(tmp_path)
    bad = _export(tmp_path)
    (bad / "batching_params.pbtxt").write_text("pad_variable_length_inputs { value: true }\n")
    repository = ModelRepository(tmp_path)
    # Under `latest`, the version before the broken one serves.
    assert repository.served_versions("doubler") == [int(good.name)]
    assert "batching_params.pbtxt:1:28" in repository.broken("doubler", int(bad.name))
    with pytest.raises(ModelError, match="version 2 is not served"):
        repository.resolve("doubler", int(bad.name))
