"""`serve-local` on TF Serving's own test SavedModels (vendored unchanged in
`tests/tf_serving_testdata/`, see its SOURCE.md), answering the cases of the
upstream `tensorflow_model_server_test.py` as TF Serving does: each test
below is one upstream case, its request and expected answer as upstream
writes them."""

import http.client
import json
import pathlib

import grpc
import pytest
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from tl_keras.serving.local_server import LocalServer
from tl_keras.serving.model_repository import ServedModel

TESTDATA = pathlib.Path(__file__).parent / "tf_serving_testdata"
TF1, TF2 = TESTDATA / "saved_model_half_plus_two_cpu", TESTDATA / "saved_model_half_plus_two_tf2_cpu"


def _serve(model_path, name="default"):
    return LocalServer(models=[ServedModel(name, model_path)], grpc_port=0, rest_port=0)


@pytest.fixture(scope="module")
def tf1():
    with _serve(TF1) as server:
        yield server


@pytest.fixture(scope="module")
def tf2():
    with _serve(TF2) as server:
        yield server


def _stub(server, service=prediction_service_pb2_grpc.PredictionServiceStub):
    return service(grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}"))


def _rest(server, path, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
    connection.request("GET" if body is None else "POST", path, body=None if body is None else json.dumps(body))
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def _example_request(message, signature):
    request = message()
    request.model_spec.name, request.model_spec.signature_name = "default", signature
    request.input.example_list.examples.add().features.feature["x"].float_list.value.extend([2.0])
    return request


def _check_spec(spec, signature):
    assert (spec.name, spec.signature_name, spec.version.value) == ("default", signature, 123)


def test_get_model_status(tf1):  # testGetModelStatus
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    result = _stub(tf1, model_service_pb2_grpc.ModelServiceStub).GetModelStatus(request, 5)
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == 123 and result.model_version_status[0].status.error_code == 0


def test_get_model_metadata(tf1):  # testGetModelMetadata
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    result = _stub(tf1).GetModelMetadata(request, 5)
    assert result.model_spec.name == "default" and result.model_spec.version.value == 123
    assert list(result.metadata) == ["signature_def"]


@pytest.mark.parametrize("served", ["tf1", "tf2"])
def test_classify(served, request):  # testClassify, testClassifyTf2
    server = request.getfixturevalue(served)
    result = _stub(server).Classify(_example_request(classification_pb2.ClassificationRequest, "classify_x_to_y"), 5)
    assert len(result.result.classifications) == 1 and len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    _check_spec(result.model_spec, "classify_x_to_y")


@pytest.mark.parametrize("served", ["tf1", "tf2"])
def test_regress(served, request):  # testRegress, testRegressTf2
    server = request.getfixturevalue(served)
    result = _stub(server).Regress(_example_request(regression_pb2.RegressionRequest, "regress_x_to_y"), 5)
    assert len(result.result.regressions) == 1 and result.result.regressions[0].value == 3.0
    _check_spec(result.model_spec, "regress_x_to_y")


@pytest.mark.parametrize("served", ["tf1", "tf2"])
def test_multi_inference(served, request):  # testMultiInference, testMultiInferenceTf2
    server = request.getfixturevalue(served)
    message = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", "regress"), ("classify_x_to_y", "classify")):
        task = message.tasks.add()
        task.model_spec.name, task.model_spec.signature_name = "default", signature
        task.method_name = f"tensorflow/serving/{method}"
    message.input.example_list.examples.add().features.feature["x"].float_list.value.extend([2.0])
    result = _stub(server).MultiInference(message, 5)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for answer, task in zip(result.results, message.tasks):
        _check_spec(answer.model_spec, task.model_spec.signature_name)


@pytest.mark.parametrize("specify_output", [True, False])
def test_predict_saved_model(tf1, specify_output):  # testPredictSavedModel (VerifyPredictRequest)
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = "default", "serving_default"
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1  # Shape [1] for a signature declared [-1, 1].
    if specify_output:
        request.output_filter.append("y")
    result = _stub(tf1).Predict(request, 5)
    assert "y" in result.outputs and result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert list(result.outputs["y"].float_val) == [3.0]
    _check_spec(result.model_spec, "serving_default")


def test_predict_half_plus_three():  # the session-bundle style model with ParseExample in its graph
    with _serve(TESTDATA / "saved_model_half_plus_three") as server:
        assert _rest(server, "/v1/models/default:predict", {"instances": [2.0, 3.0, 4.0]}) == (
            200, {"predictions": [4.0, 4.5, 5.0]})


@pytest.mark.parametrize("path, body, answer", [
    (":classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}, {"results": [[["", 3.0]]]}),
    (":regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}, {"results": [3.0]}),
    (":predict", {"instances": [2.0, 3.0, 4.0]}, {"predictions": [3.0, 3.5, 4.0]}),
    (":predict", {"inputs": [2.0, 3.0, 4.0]}, {"outputs": [3.0, 3.5, 4.0]}),
    ("", None, {"model_version_status": [{"version": "123", "state": "AVAILABLE",
                                          "status": {"error_code": "OK", "error_message": ""}}]}),
])
def test_rest(tf1, path, body, answer):  # testClassifyREST ... testGetStatusREST
    assert _rest(tf1, f"/v1/models/default{path}", body) == (200, answer)


def _sorted(value):  # As upstream's SortedObject: metadata lists have no order.
    if isinstance(value, dict):
        return sorted((key, _sorted(item)) for key, item in value.items())
    if isinstance(value, list):
        return sorted(_sorted(item) for item in value)
    return value


def test_get_model_metadata_rest(tf1):  # testGetModelMetadataREST
    status, answer = _rest(tf1, "/v1/models/default/metadata")
    expected = json.loads((TESTDATA / "half_plus_two_model_metadata.json").read_text())
    assert status == 200 and _sorted(answer) == _sorted(expected)


def test_two_versions_serve_the_newest_and_name_either():  # saved_model_half_plus_two_2_versions
    with _serve(TESTDATA / "saved_model_half_plus_two_2_versions") as server:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "default"
        status = _stub(server, model_service_pb2_grpc.ModelServiceStub).GetModelStatus(request, 5)
        assert [entry.version for entry in status.model_version_status] == [124]
        assert _rest(server, "/v1/models/default/versions/124:predict", {"instances": [2.0]}) == (
            200, {"predictions": [3.0]})
        status, answer = _rest(server, "/v1/models/default/versions/123:predict", {"instances": [2.0]})
        assert status == 404 and answer["error"].startswith("Servable not found for request: Specific(default, 123)")
