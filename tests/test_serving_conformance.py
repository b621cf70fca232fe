"""`serve-local` against TF Serving's documented behaviour: the REST API
document's requests and answers (`api_rest.md`), its model server tests'
gRPC cases, version policies and labels (`serving_config.md`), on tiny
half-plus-two models built here, TF2 (`tf.saved_model.save`) and TF1
(`tf.compat.v1` builder) style, as TF Serving's own testdata are."""

import http.client
import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from tl_keras.serving.local_server import LocalServer
from tl_keras.serving.model_repository import read_model_config


class HalfPlusTwo(tf.Module):
    """y = 0.5 x + 2, a TF2 SavedModel with one input and one output."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def serve(self, x):
        return {"y": 0.5 * x + 2.0}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
    def two_outputs(self, x):
        return {"y": 0.5 * x + 2.0, "name_bytes": tf.fill(tf.shape(x), tf.constant(b"\xff\x00"))}


def _half_plus_two(folder, offset=2.0):
    module = HalfPlusTwo()
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve,
                                                         "two_outputs": module.two_outputs})
    return folder


def _half_plus_three_tf1(folder):
    """y = 0.5 x + 3 with TF1 predict, regress and classify signatures on
    serialized tf.Examples, built with `tf.compat.v1`'s builder like TF
    Serving's `saved_model_half_plus_three` testdata."""
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        parsed = v1.parse_example(serialized, {"x": v1.FixedLenFeature([1], tf.float32)})
        x_example = tf.reshape(parsed["x"], [-1])
        x = v1.placeholder(tf.float32, [None], name="x")
        a, b = v1.Variable(0.5, name="a"), v1.Variable(3.0, name="b")
        y, y_example = a * x + b, a * x_example + b
        classes = tf.reshape(tf.tile(tf.constant(["low"]), tf.shape(y_example)), [-1, 1])
        info = v1.saved_model.utils.build_tensor_info
        predict = v1.saved_model.signature_def_utils.build_signature_def(
            {"x": info(x)}, {"y": info(y)}, "tensorflow/serving/predict")
        regress = v1.saved_model.signature_def_utils.build_signature_def(
            {"inputs": info(serialized)}, {"outputs": info(y_example)}, "tensorflow/serving/regress")
        classify = v1.saved_model.signature_def_utils.build_signature_def(
            {"inputs": info(serialized)}, {"classes": info(classes), "scores": info(tf.reshape(y_example, [-1, 1]))},
            "tensorflow/serving/classify")
        with v1.Session() as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(str(folder))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map={
                "serving_default": predict, "tensorflow/serving/regress": regress,
                "tensorflow/serving/classify": classify})
            builder.save()
    return folder


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("conformance")
    _half_plus_two(base / "half_plus_two" / "00000123")
    _half_plus_three_tf1(base / "half_plus_three" / "00000123")
    for version in (1, 2, 3):
        _half_plus_two(base / "versions" / str(version))
    config = base / "models.config"
    config.write_text(f"""model_config_list {{
  config {{ name: "half_plus_two" base_path: "{base / 'half_plus_two'}" model_platform: "tensorflow" }}
  config {{ name: "half_plus_three" base_path: "{base / 'half_plus_three'}" model_platform: "tensorflow" }}
  config {{ name: "all_versions" base_path: "{base / 'versions'}" model_platform: "tensorflow"
           model_version_policy {{ all {{}} }} }}
  config {{ name: "two_latest" base_path: "{base / 'versions'}" model_platform: "tensorflow"
           model_version_policy {{ latest {{ num_versions: 2 }} }} }}
  config {{ name: "labelled" base_path: "{base / 'versions'}" model_platform: "tensorflow"
           model_version_policy {{ specific {{ versions: 1 versions: 2 }} }}
           version_labels {{ key: "stable" value: 1 }} version_labels {{ key: "canary" value: 2 }} }}
}}""")
    with LocalServer(models=read_model_config(config), grpc_port=0, rest_port=0) as server:
        yield server, base


def _rest(server, method, path, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    connection.request(method, path, body=data, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def _stub(server, service=prediction_service_pb2_grpc.PredictionServiceStub):
    return service(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))


# --- REST (api_rest.md) -------------------------------------------------------


@pytest.mark.parametrize("body, answer", [
    ({"instances": [1.0, 2.0, 5.0]}, {"predictions": [2.5, 3.0, 4.5]}),
    ({"inputs": [1.0, 2.0, 5.0]}, {"outputs": [2.5, 3.0, 4.5]}),
    ({"instances": [{"x": 1.0}, {"x": 2.0}]}, {"predictions": [2.5, 3.0]}),
    ({"inputs": {"x": [1.0, 2.0]}}, {"outputs": [2.5, 3.0]}),
    ({"signature_name": "serving_default", "instances": [0.0]}, {"predictions": [2.0]}),
])
def test_rest_predict_formats(served, body, answer):
    server, _ = served
    assert _rest(server, "POST", "/v1/models/half_plus_two:predict", body) == (200, answer)


def test_rest_answers_at_float32_precision_and_names_several_outputs(served):
    server, _ = served
    status, answer = _rest(server, "POST", "/v1/models/half_plus_two:predict", {"instances": [-1.2]})
    assert status == 200 and answer == {"predictions": [1.4]}  # Not 1.399999976158142.
    status, answer = _rest(server, "POST", "/v1/models/half_plus_two:predict",
                           {"signature_name": "two_outputs", "instances": [1.0, 3.0]})
    assert status == 200 and answer == {"predictions": [{"y": 2.5, "name_bytes": {"b64": "/wA="}},
                                                        {"y": 3.5, "name_bytes": {"b64": "/wA="}}]}
    status, answer = _rest(server, "POST", "/v1/models/half_plus_two:predict",
                           {"signature_name": "two_outputs", "inputs": {"x": [1.0]}})
    assert answer == {"outputs": {"y": [2.5], "name_bytes": [{"b64": "/wA="}]}}


def test_rest_status_and_metadata_read_zero_padded_versions(served):
    server, _ = served
    assert _rest(server, "GET", "/v1/models/half_plus_three/versions/123") == (200, {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    assert _rest(server, "GET", "/v1/models/half_plus_three") == (200, {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    status, answer = _rest(server, "GET", "/v1/models/half_plus_two/versions/123/metadata")
    assert status == 200 and answer["model_spec"] == {"name": "half_plus_two", "signature_name": "",
                                                      "version": "123"}
    assert set(answer["metadata"]["signature_def"]["signature_def"]) == {"serving_default", "two_outputs"}


def test_rest_regress_and_classify_on_a_tf1_model(served):
    server, _ = served
    assert _rest(server, "POST", "/v1/models/half_plus_three:regress",
                 {"signature_name": "tensorflow/serving/regress", "examples": [{"x": 1.0}, {"x": 2.0}]}) == \
        (200, {"results": [3.5, 4.0]})
    assert _rest(server, "POST", "/v1/models/half_plus_three:classify",
                 {"signature_name": "tensorflow/serving/classify", "examples": [{"x": 1.0}]}) == \
        (200, {"results": [[["low", 3.5]]]})
    assert _rest(server, "POST", "/v1/models/half_plus_three:predict", {"instances": [1.0, 2.0]}) == \
        (200, {"predictions": [3.5, 4.0]})
    status, answer = _rest(server, "POST", "/v1/models/half_plus_three:regress", {"examples": [{"x": 1.0}]})
    # TF Serving checks no method names by default (`--enable_signature_method_name_check=false`): the
    # signature's inputs decide.
    assert status == 400 and "must take one string input of serialized tf.Examples" in answer["error"]


@pytest.mark.parametrize("method, path, body, status, pattern", [
    ("POST", "/v1/models/half:predict", {"instances": [1.0]}, 404, r"Servable not found for request: Latest\(half\)"),
    ("POST", "/v1/models/half_plus_two:predict", {"instances": [1.0], "inputs": [1.0]}, 400, "exactly one of"),
    ("POST", "/v1/models/half_plus_two:predict", {"signature_name": "nope", "instances": [1.0]}, 400,
     'signature name: "nope" not found'),
    ("POST", "/v1/models/labelled/labels/nope:predict", {"instances": [1.0]}, 400, "Unrecognized servable version label"),
    ("POST", "/v1/models/half_plus_two/versions/7:predict", {"instances": [1.0]}, 404, r"Specific\(half_plus_two, 7\)"),
    ("POST", "/v1/models/half_plus_two:explode", {"instances": [1.0]}, 400, "Malformed request"),
    ("GET", "/v2/models/half_plus_two", None, 400, "Malformed request"),
    ("POST", "/v1/models/half_plus_two:predict", b"{not json", 400, "JSON Parse error"),
    ("POST", "/v1/models/half_plus_two:predict", {"instances": ["a"]}, 400, "must be float32"),
    # http_rest_api_handler_test.cc's UnsupportedApiCalls and PredictRequestErrors.
    ("GET", "/v1/foo", None, 400, "Malformed request"),
    ("POST", "/v1/foo", b"", 400, "Malformed request"),
    ("GET", "/v1/models", None, 400, "Missing model name"),
    ("POST", "/v1/models", b"", 400, "Malformed request"),
    ("GET", "/v1/models/half_plus_two:predict", None, 400, "Malformed request"),
    ("GET", "/v1/models/half_plus_two/version/50:predict", None, 400, "Malformed request"),
    ("POST", "/v1/models/half_plus_two/version/50:regress", b"", 400, "Malformed request"),
    ("POST", "/v1/models/half_plus_two/versions/HELLO:regress", b"", 400, "Malformed request"),
    ("POST", "/v1/models/half_plus_two/versions/18446744073709551615:regress", b"", 400, "Failed to convert version"),
    ("POST", "/v1/models/half_plus_two/versions/50:predict", {"instances": [1.0]}, 404, "Servable not found"),
    ("POST", "/v1/models/half_plus_two:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("POST", "/v1/models/half_plus_two:predict", b"instances = [1, 2]", 400, "JSON Parse error: Invalid value"),
])
def test_rest_errors_answer_with_tf_serving_codes(served, method, path, body, status, pattern):
    import re

    server, _ = served
    code, answer = _rest(server, method, path, body)
    assert code == status and re.search(pattern, answer["error"]), answer


def test_version_policies_and_labels(served):
    server, _ = served
    statuses = {name: [int(s["version"]) for s in _rest(server, "GET", f"/v1/models/{name}")[1]["model_version_status"]]
                for name in ("all_versions", "two_latest", "labelled")}
    assert statuses == {"all_versions": [1, 2, 3], "two_latest": [2, 3], "labelled": [1, 2]}
    assert _rest(server, "GET", "/v1/models/labelled/labels/canary")[1]["model_version_status"][0]["version"] == "2"
    assert _rest(server, "POST", "/v1/models/two_latest/versions/1:predict", {"instances": [1.0]})[0] == 404
    assert _rest(server, "POST", "/v1/models/all_versions/versions/1:predict", {"instances": [1.0]})[0] == 200


def test_prometheus_metrics_count_requests_and_latency(served):
    server, _ = served
    _rest(server, "POST", "/v1/models/half_plus_two:predict", {"instances": [1.0]})
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    connection.request("GET", "/monitoring/prometheus/metrics")
    text = connection.getresponse().read().decode()
    assert ':tensorflow:serving:request_count{model_name="half_plus_two",entrypoint="rest_post",status="200"}' in text
    assert ':tensorflow:serving:request_latency_bucket{model_name="half_plus_two"' in text


# --- gRPC (tensorflow_model_server_test.py) -----------------------------------


def _predict_request(name, values, signature="", **spec):
    request = predict_pb2.PredictRequest(model_spec=model_pb2.ModelSpec(name=name, signature_name=signature, **spec))
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(values, np.float32)))
    return request


def test_grpc_predict_fills_typed_value_fields(served):
    server, _ = served
    response = _stub(server).Predict(_predict_request("half_plus_two", [1.0, 2.0]), timeout=10)
    assert list(response.outputs["y"].float_val) == [2.5, 3.0] and not response.outputs["y"].tensor_content
    assert response.model_spec.version.value == 123 and response.model_spec.signature_name == "serving_default"
    request = _predict_request("half_plus_two", [1.0], "two_outputs")
    request.output_filter.append("name_bytes")
    response = _stub(server).Predict(request, timeout=10)
    assert list(response.outputs) == ["name_bytes"] and list(response.outputs["name_bytes"].string_val) == [b"\xff\x00"]


@pytest.mark.parametrize("request_, code", [
    (_predict_request("half_plus_two", [1.0], "nope"), grpc.StatusCode.FAILED_PRECONDITION),
    (_predict_request("missing", [1.0]), grpc.StatusCode.NOT_FOUND),
    (_predict_request("half_plus_two", [1.0], version=model_pb2.google_dot_protobuf_dot_wrappers__pb2.Int64Value(
        value=9)), grpc.StatusCode.NOT_FOUND),
    (_predict_request("labelled", [1.0], version_label="nope"), grpc.StatusCode.INVALID_ARGUMENT),
])
def test_grpc_errors_use_tf_serving_codes(served, request_, code):
    server, _ = served
    with pytest.raises(grpc.RpcError) as caught:
        _stub(server).Predict(request_, timeout=10)
    assert caught.value.code() == code


def _examples(*values):
    request_input = classification_pb2.ClassificationRequest().input
    for value in values:
        example = request_input.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(value)
    return request_input


def test_grpc_classify_regress_and_multi_inference(served):
    server, _ = served
    spec = model_pb2.ModelSpec(name="half_plus_three", signature_name="tensorflow/serving/regress")
    response = _stub(server).Regress(regression_pb2.RegressionRequest(model_spec=spec, input=_examples(1.0, 2.0)))
    assert [r.value for r in response.result.regressions] == [3.5, 4.0]
    spec = model_pb2.ModelSpec(name="half_plus_three", signature_name="tensorflow/serving/classify")
    response = _stub(server).Classify(classification_pb2.ClassificationRequest(model_spec=spec, input=_examples(2.0)))
    assert [(c.label, c.score) for c in response.result.classifications[0].classes] == [("low", 4.0)]
    request = inference_pb2.MultiInferenceRequest(input=_examples(1.0))
    request.tasks.add(model_spec=model_pb2.ModelSpec(name="half_plus_three", signature_name="tensorflow/serving/regress"),
                      method_name="tensorflow/serving/regress")
    request.tasks.add(model_spec=model_pb2.ModelSpec(name="half_plus_three",
                                                     signature_name="tensorflow/serving/classify"),
                      method_name="tensorflow/serving/classify")
    response = _stub(server).MultiInference(request)
    assert response.results[0].regression_result.regressions[0].value == 3.5
    assert response.results[1].classification_result.classifications[0].classes[0].label == "low"


def test_grpc_status_and_config_reload(served, tmp_path):
    server, base = served
    models = _stub(server, model_service_pb2_grpc.ModelServiceStub)
    status = models.GetModelStatus(get_model_status_pb2.GetModelStatusRequest(
        model_spec=model_pb2.ModelSpec(name="all_versions")))
    assert [s.version for s in status.model_version_status] == [1, 2, 3]
    assert all(s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE for s in status.model_version_status)
    config = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(f'model_config_list {{ config {{ name: "renamed" base_path: "{base / "versions"}" }} }}', config)
    reply = models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(config=config))
    assert reply.status.error_code == 0
    try:
        assert _stub(server).Predict(_predict_request("renamed", [4.0])).outputs["y"].float_val == [4.0]
        with pytest.raises(grpc.RpcError) as caught:
            _stub(server).Predict(_predict_request("half_plus_two", [1.0]))
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        server.repository.reload(read_model_config(base / "models.config"))
