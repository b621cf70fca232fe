"""A local stand-in for TF Serving, for trying exports without Docker.

NOT a production server: it runs SavedModels in this Python process with
`tf.saved_model.load`, one request at a time a model. Use the official
`tensorflow/serving` image for anything real (see `export/README.md`).

It reads the TF Serving layout (`<base>/<name>/<version>/`), serves the newest
version of each model and picks up a new version as soon as its folder
appears (exports are renamed into place whole, so a folder is never half
written). It answers gRPC `Predict`, `GetModelMetadata` and `GetModelStatus`
with TF Serving's own protos, and the REST API's `:predict`, `/metadata` and
status calls.

Example:
>>> server = LocalServer("exports", grpc_port=8500, rest_port=8501)
>>> server.start()
"""

import concurrent.futures
import http.server
import json
import pathlib
import re
import threading

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tl_keras.serving import from_json_values, holds_text


class ModelError(LookupError):
    """A request for a model, version or signature the server does not have,
    or with inputs the signature does not take. `status` is the gRPC code."""

    def __init__(self, message, status=grpc.StatusCode.NOT_FOUND):
        super().__init__(message)
        self.status = status


class ModelRepository:
    """The models under a TF Serving base folder, loaded on first use.

    Args:
        base_path: the folder holding `<name>/<version>/` SavedModels.
        version_labels: optional `{name: {label: version}}`.
    """

    def __init__(self, base_path, version_labels=None):
        import tensorflow_text  # noqa: F401  (registers the TF Text ops)

        self.base_path = pathlib.Path(base_path)
        self.version_labels = version_labels or {}
        self._loaded = {}
        self._lock = threading.Lock()

    def versions(self, name):
        folder = self.base_path / name
        if not re.fullmatch(r"[\w.-]+", name) or not folder.is_dir():
            raise ModelError(f"Servable not found for request: model {name!r} is not under {self.base_path}")
        return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit())

    def resolve(self, name, version=None, label=None):
        """Returns `(version, loaded SavedModel)`; the newest version if
        neither `version` nor `label` is given."""
        available = self.versions(name)
        if label:
            if label not in self.version_labels.get(name, {}):
                raise ModelError(f"Unrecognized servable version label {label!r} for model {name!r}")
            version = self.version_labels[name][label]
        if version is None:
            if not available:
                raise ModelError(f"Servable not found for request: model {name!r} has no versions yet")
            version = available[-1]
        if version not in available:
            raise ModelError(f"Servable not found for request: model {name!r} version {version} (have {available})")
        with self._lock:
            key = (name, version)
            if key not in self._loaded:
                self._loaded[key] = tf.saved_model.load(str(self.base_path / name / str(version)))
            return version, self._loaded[key]

    def signature_defs(self, name, version):
        """The `SignatureDefMap` as written in `saved_model.pb` (what TF
        Serving reports), without the internal `__saved_model_init_op`."""
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((self.base_path / name / str(version) / "saved_model.pb").read_bytes())
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, value in proto.meta_graphs[0].signature_def.items():
            if not key.startswith("__"):
                signatures.signature_def[key].CopyFrom(value)
        return signatures

    def run(self, name, version, label, signature_name, inputs):
        """Calls a signature with numpy inputs; returns `(version, outputs)`."""
        version, loaded = self.resolve(name, version, label)
        signature_name = signature_name or "serving_default"
        if signature_name not in loaded.signatures:
            raise ModelError(
                f"Serving signature name: {signature_name!r} not found in signature def "
                f"(have {sorted(loaded.signatures)})", grpc.StatusCode.INVALID_ARGUMENT,
            )
        function = loaded.signatures[signature_name]
        expected = set(function.structured_input_signature[1])
        if set(inputs) != expected:
            raise ModelError(
                f"input names {sorted(inputs)} do not match signature {signature_name!r} inputs {sorted(expected)}",
                grpc.StatusCode.INVALID_ARGUMENT,
            )
        specs = function.structured_input_signature[1]
        try:
            tensors = {k: tf.convert_to_tensor(v, dtype=specs[k].dtype) for k, v in inputs.items()}
            outputs = function(**tensors)
        except (TypeError, ValueError, tf.errors.InvalidArgumentError) as error:
            raise ModelError(f"bad input for signature {signature_name!r}: {error}",
                             grpc.StatusCode.INVALID_ARGUMENT) from None
        return version, {k: v.numpy() for k, v in outputs.items()}


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, repository):
        self.repository = repository

    def Predict(self, request, context):
        spec = request.model_spec
        try:
            version, outputs = self.repository.run(
                spec.name, spec.version.value if spec.HasField("version") else None, spec.version_label,
                spec.signature_name, {k: tf.make_ndarray(v) for k, v in request.inputs.items()},
            )
        except ModelError as error:
            context.abort(error.status, str(error))
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(spec)
        response.model_spec.version.value = version
        response.model_spec.signature_name = spec.signature_name or "serving_default"
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    def GetModelMetadata(self, request, context):
        spec = request.model_spec
        if list(request.metadata_field) != ["signature_def"]:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Metadata field signature_def is the only one supported")
        try:
            version, _ = self.repository.resolve(
                spec.name, spec.version.value if spec.HasField("version") else None, spec.version_label
            )
        except ModelError as error:
            context.abort(error.status, str(error))
        signatures = self.repository.signature_defs(spec.name, version)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(signatures)
        return response


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, repository):
        self.repository = repository

    def GetModelStatus(self, request, context):
        spec = request.model_spec
        try:
            versions = self.repository.versions(spec.name)
            if spec.HasField("version"):
                self.repository.resolve(spec.name, spec.version.value)
                versions = [spec.version.value]
            elif spec.version_label:
                versions = [self.repository.resolve(spec.name, label=spec.version_label)[0]]
        except ModelError as error:
            context.abort(error.status, str(error))
        response = get_model_status_pb2.GetModelStatusResponse()
        for version in versions:
            status = response.model_version_status.add(version=version)
            status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return response


def _to_json(value):
    if isinstance(value, np.ndarray):
        return [_to_json(v) for v in value] if value.ndim else _to_json(value.item())
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


class _RestHandler(http.server.BaseHTTPRequestHandler):
    repository = None
    max_body_bytes = 4 * 1024 * 1024
    path_pattern = re.compile(r"^/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?(/metadata|:predict)?$")

    def log_message(self, format, *args):  # Quiet: tests and demos read stdout.
        pass

    def _send(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method):
        match = self.path_pattern.match(self.path)
        if not match:
            return self._send(404, {"error": f"Malformed request: {method} {self.path}"})
        name, version, label, action = match.groups()
        version = int(version) if version else None
        try:
            if method == "POST" and action == ":predict":
                return self._predict(name, version, label)
            if method == "GET" and action == "/metadata":
                version, _ = self.repository.resolve(name, version, label)
                signatures = self.repository.signature_defs(name, version)
                return self._send(200, {
                    "model_spec": {"name": name, "signature_name": "", "version": str(version)},
                    "metadata": {"signature_def": json_format.MessageToDict(signatures, preserving_proto_field_name=True)},
                })
            if method == "GET" and action is None:
                versions = [self.repository.resolve(name, version, label)[0]] if version or label \
                    else self.repository.versions(name)
                return self._send(200, {"model_version_status": [
                    {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
                    for v in versions
                ]})
        except ModelError as error:
            return self._send(404 if error.status == grpc.StatusCode.NOT_FOUND else 400, {"error": str(error)})
        return self._send(405, {"error": f"Unsupported method {method} for {self.path}"})

    def _predict(self, name, version, label):
        length = int(self.headers.get("Content-Length", 0))
        if length > self.max_body_bytes:
            self._send(413, {"error": f"request of {length} bytes exceeds {self.max_body_bytes} bytes"})
            return
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError as error:
            return self._send(400, {"error": f"JSON Parse error: {error}"})
        if "inputs" in body:
            inputs = body["inputs"] if isinstance(body["inputs"], dict) else {"text": body["inputs"]}
        elif "instances" in body and body["instances"] and isinstance(body["instances"][0], dict):
            inputs = {k: [row[k] for row in body["instances"]] for k in body["instances"][0]}
        elif "instances" in body:
            inputs = {"text": body["instances"]}
        else:
            return self._send(400, {"error": "Missing 'inputs' or 'instances' key"})
        inputs = {k: from_json_values(v) for k, v in inputs.items()}
        inputs = {k: np.asarray(v, dtype=object if holds_text(v) else None) for k, v in inputs.items()}
        _, outputs = self.repository.run(name, version, label, body.get("signature_name"), inputs)
        if "inputs" in body:
            return self._send(200, {"outputs": {k: _to_json(v) for k, v in outputs.items()}})
        rows = [{k: _to_json(v[i]) for k, v in outputs.items()} for i in range(len(next(iter(outputs.values()))))]
        return self._send(200, {"predictions": rows})

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")


class LocalServer:
    """gRPC and REST endpoints over a `ModelRepository` on this machine.

    Args:
        base_path: the TF Serving base folder (`<name>/<version>/`).
        grpc_port: gRPC port (0 picks a free one; see `.grpc_port`).
        rest_port: REST port (0 picks a free one), or `None` for no REST.
        host: the address to bind; loopback by default.
        max_request_bytes: larger requests are refused (gRPC
            RESOURCE_EXHAUSTED, REST 413).
        version_labels: optional `{name: {label: version}}`.
    """

    def __init__(self, base_path, grpc_port=8500, rest_port=8501, host="127.0.0.1",
                 max_request_bytes=4 * 1024 * 1024, version_labels=None):
        self.repository = ModelRepository(base_path, version_labels)
        self._grpc = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=8),
            options=[("grpc.max_receive_message_length", max_request_bytes)],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionService(self.repository), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self.repository), self._grpc)
        self.grpc_port = self._grpc.add_insecure_port(f"{host}:{grpc_port}")
        self._http = None
        if rest_port is not None:
            handler = type("Handler", (_RestHandler,), {
                "repository": self.repository, "max_body_bytes": max_request_bytes})
            self._http = http.server.ThreadingHTTPServer((host, rest_port), handler)
            self.rest_port = self._http.server_address[1]
        self.host = host

    def start(self):
        self._grpc.start()
        if self._http:
            threading.Thread(target=self._http.serve_forever, daemon=True).start()
        return self

    def stop(self):
        self._grpc.stop(grace=1).wait()
        if self._http:
            self._http.shutdown()
            self._http.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
