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

import binascii
import concurrent.futures
import dataclasses
import errno
import functools
import http.server
import json
import pathlib
import re
import sys
import threading

from google.protobuf import json_format
import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from tl_keras.core.files import SAFE_NAME
from tl_keras.serving.rest_json import from_json_values, holds_text


class ModelError(LookupError):
    """A request for a model, version or signature the server does not have,
    or with inputs the signature does not take. `status` is the gRPC code."""

    def __init__(self, message, status=grpc.StatusCode.NOT_FOUND):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class RequestLimits:
    """What one request may ask of the server, checked before anything is
    allocated: the bytes of its body or message, the bytes its tensors
    declare (shape times dtype), and the rows (first dimension) of each input.

    Args:
        max_bytes: the largest request body or gRPC message.
        max_tensor_bytes: the largest size a request's tensors may declare.
        max_rows: the most rows an input may have.
        read_timeout: seconds a REST client may take to send its request.
    """

    max_bytes: int = 4 * 1024 * 1024
    max_tensor_bytes: int = 64 * 1024 * 1024
    max_rows: int = 1024
    read_timeout: float = 10.0

    def check_rows(self, name, rows):
        if rows > self.max_rows:
            raise ModelError(f"input {name!r} has {rows} rows, more than the server's limit of {self.max_rows} a "
                             "request; split it into smaller requests", grpc.StatusCode.RESOURCE_EXHAUSTED)


_VALUE_FIELDS = {  # TensorProto's repeated field for each dtype, to count values without building them.
    tf.float32: "float_val", tf.float64: "double_val", tf.int32: "int_val", tf.int16: "int_val",
    tf.int8: "int_val", tf.uint8: "int_val", tf.uint16: "int_val", tf.int64: "int64_val", tf.bool: "bool_val",
    tf.string: "string_val", tf.float16: "half_val", tf.uint32: "uint32_val", tf.uint64: "uint64_val",
}


def tensor_from_proto(name, proto, limits):
    """A request's `TensorProto` as a numpy array, after checking its
    declared shape and content against `limits` and against each other
    (`tf.make_ndarray` would allocate whatever shape the request declares).

    Raises:
        ModelError: INVALID_ARGUMENT for an unsupported dtype, a bad shape
            or content that does not fill it; RESOURCE_EXHAUSTED past the
            limits.
    """
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:
        dtype = None
    if dtype is None or dtype not in _VALUE_FIELDS:
        raise ModelError(f"input {name!r} has unsupported dtype {proto.dtype}", grpc.StatusCode.INVALID_ARGUMENT)
    if proto.tensor_shape.unknown_rank:
        raise ModelError(f"input {name!r} has an unknown rank", grpc.StatusCode.INVALID_ARGUMENT)
    shape = [dim.size for dim in proto.tensor_shape.dim]
    if any(size < 0 for size in shape):
        raise ModelError(f"input {name!r} has shape {shape}; every dimension must be >= 0",
                         grpc.StatusCode.INVALID_ARGUMENT)
    elements = int(np.prod(shape, dtype=object)) if shape else 1
    values = len(getattr(proto, _VALUE_FIELDS[dtype]))
    if dtype == tf.string:
        declared = elements * 8 + sum(len(value) for value in proto.string_val)
    else:
        declared = elements * dtype.size
    if declared > limits.max_tensor_bytes:
        raise ModelError(f"input {name!r} declares shape {shape} of {dtype.name} ({declared} bytes), more than the "
                         f"server's limit of {limits.max_tensor_bytes} bytes", grpc.StatusCode.RESOURCE_EXHAUSTED)
    if shape:
        limits.check_rows(name, shape[0])
    if proto.tensor_content:
        if dtype == tf.string or len(proto.tensor_content) != elements * dtype.size:
            raise ModelError(f"input {name!r}: tensor_content of {len(proto.tensor_content)} bytes does not fill "
                             f"shape {shape} of {dtype.name}", grpc.StatusCode.INVALID_ARGUMENT)
    elif values == 0 and elements:
        raise ModelError(f"input {name!r} declares shape {shape} but holds no values",
                         grpc.StatusCode.INVALID_ARGUMENT)
    elif values not in (elements, 1) and elements:
        raise ModelError(f"input {name!r} holds {values} values for shape {shape} ({elements} elements)",
                         grpc.StatusCode.INVALID_ARGUMENT)
    try:
        return tf.make_ndarray(proto)
    except (TypeError, ValueError) as error:
        raise ModelError(f"input {name!r} cannot be read: {error}", grpc.StatusCode.INVALID_ARGUMENT) from None


def _first_line(error):
    """The first line of a TensorFlow error: the cause, without the graph
    trace that follows it."""
    message = getattr(error, "message", None) or str(error)
    return message.strip().splitlines()[0] if message.strip() else type(error).__name__


class ModelRepository:
    """The models under a TF Serving base folder, loaded on first use.

    Version folders are read as TF Serving reads them: any all-digit name
    (`00000123` is version 123). A version that fails to load is logged and
    skipped, so the newest version that loads keeps serving; it is tried
    again when its folder changes.

    Args:
        base_path: the folder holding `<name>/<version>/` SavedModels.
        version_labels: optional `{name: {label: version}}`.
    """

    def __init__(self, base_path, version_labels=None):
        import tensorflow_text  # noqa: F401  (registers the TF Text ops)

        self.base_path = pathlib.Path(base_path)
        self.version_labels = version_labels or {}
        self._loaded = {}
        self._broken = {}
        self._lock = threading.Lock()

    def version_folders(self, name):
        """`{version: folder}` of a model; raises `ModelError` for a name that
        is not a plain folder name or not under the base folder."""
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name) or not (self.base_path / name).is_dir():
            raise ModelError(f"Servable not found for request: model {name!r} is not under {self.base_path}")
        folders = {}
        for folder in (self.base_path / name).iterdir():
            if folder.is_dir() and folder.name.isdigit() and folder.name.isascii():
                folders.setdefault(int(folder.name), folder)
        return dict(sorted(folders.items()))

    def versions(self, name):
        """The model's version numbers, broken ones included, ascending."""
        return list(self.version_folders(name))

    def broken(self, name, version):
        """The load error of a version that failed to load, or `None`."""
        entry = self._broken.get((name, version))
        return entry[1] if entry else None

    def _load(self, name, version, folder):
        key = (name, version)
        with self._lock:
            if key in self._loaded:
                return self._loaded[key]
            stamp = folder.stat().st_mtime_ns
            if key in self._broken and self._broken[key][0] == stamp:
                raise ModelError(f"model {name!r} version {version} failed to load: {self._broken[key][1]}",
                                 grpc.StatusCode.FAILED_PRECONDITION)
            try:
                self._loaded[key] = tf.saved_model.load(str(folder))
            except Exception as error:  # noqa: BLE001  (any broken folder must leave the server up)
                self._broken[key] = (stamp, _first_line(error))
                print(f"serve-local: skipping {folder}: cannot load it ({self._broken[key][1]})", file=sys.stderr,
                      flush=True)
                raise ModelError(f"model {name!r} version {version} failed to load: {self._broken[key][1]}",
                                 grpc.StatusCode.FAILED_PRECONDITION) from None
            self._broken.pop(key, None)
            return self._loaded[key]

    def resolve(self, name, version=None, label=None):
        """Returns `(version, loaded SavedModel)`; the newest version that
        loads if neither `version` nor `label` is given."""
        folders = self.version_folders(name)
        available = list(folders)
        if label:
            if label not in self.version_labels.get(name, {}):
                raise ModelError(f"Unrecognized servable version label {label!r} for model {name!r}",
                                 grpc.StatusCode.INVALID_ARGUMENT)
            version = self.version_labels[name][label]
        if version is not None:
            if version not in folders:
                raise ModelError(f"Servable not found for request: model {name!r} version {version} "
                                 f"(have {available})")
            return version, self._load(name, version, folders[version])
        for candidate in reversed(available):
            try:
                return candidate, self._load(name, candidate, folders[candidate])
            except ModelError:
                continue
        raise ModelError(f"Servable not found for request: model {name!r} has no loadable versions yet"
                         f"{f' (broken: {available})' if available else ''}")

    def signature_defs(self, name, version):
        """The `SignatureDefMap` as written in `saved_model.pb` (what TF
        Serving reports), without the internal `__saved_model_init_op`."""
        proto = saved_model_pb2.SavedModel()
        proto.ParseFromString((self.version_folders(name)[version] / "saved_model.pb").read_bytes())
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for key, value in proto.meta_graphs[0].signature_def.items():
            if not key.startswith("__"):
                signatures.signature_def[key].CopyFrom(value)
        return signatures

    def run(self, name, version, label, signature_name, inputs):
        """Calls a signature with numpy inputs; returns `(version, outputs)`.
        Inputs are checked against the signature's names, dtypes and shapes
        first, so a bad request gets an error naming the input."""
        version, loaded = self.resolve(name, version, label)
        signature_name = signature_name or "serving_default"
        if signature_name not in loaded.signatures:
            raise ModelError(
                f"Serving signature name: {signature_name!r} not found in signature def "
                f"(have {sorted(loaded.signatures)})", grpc.StatusCode.INVALID_ARGUMENT,
            )
        function = loaded.signatures[signature_name]
        specs = function.structured_input_signature[1]
        if set(inputs) != set(specs):
            raise ModelError(
                f"input names {sorted(inputs)} do not match signature {signature_name!r} inputs {sorted(specs)}",
                grpc.StatusCode.INVALID_ARGUMENT,
            )
        tensors = {}
        for key, value in inputs.items():
            spec = specs[key]
            try:
                tensors[key] = tf.convert_to_tensor(value, dtype=spec.dtype)
            except (TypeError, ValueError, tf.errors.OpError):
                kind = np.asarray(value).dtype if not isinstance(value, np.ndarray) else value.dtype
                raise ModelError(f"input {key!r} of signature {signature_name!r} must be {spec.dtype.name}, "
                                 f"received {kind} values", grpc.StatusCode.INVALID_ARGUMENT) from None
            if not spec.shape.is_compatible_with(tensors[key].shape):
                raise ModelError(f"input {key!r} of signature {signature_name!r} has shape "
                                 f"{tensors[key].shape.as_list()}; the signature takes "
                                 f"{[-1 if d is None else d for d in spec.shape.as_list()]}",
                                 grpc.StatusCode.INVALID_ARGUMENT)
        try:
            outputs = function(**tensors)
        except (TypeError, ValueError, tf.errors.OpError) as error:
            raise ModelError(f"bad input for signature {signature_name!r}: {_first_line(error)}",
                             grpc.StatusCode.INVALID_ARGUMENT) from None
        return version, {k: v.numpy() for k, v in outputs.items()}


def _abort_on_error(method):
    """Ends a gRPC call that raised with the error's status: a `ModelError`'s
    own code, INTERNAL (with the cause) for anything else, never UNKNOWN."""

    @functools.wraps(method)
    def guarded(self, request, context):
        try:
            return method(self, request, context)
        except ModelError as error:
            context.abort(error.status, str(error))
        except Exception as error:  # noqa: BLE001  (a request must never take the server down)
            context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {_first_line(error)}")

    return guarded


def _requested_version(spec):
    return spec.version.value if spec.HasField("version") else None


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, repository, limits):
        self.repository = repository
        self.limits = limits

    @_abort_on_error
    def Predict(self, request, context):
        spec = request.model_spec
        inputs = {name: tensor_from_proto(name, proto, self.limits) for name, proto in request.inputs.items()}
        version, outputs = self.repository.run(
            spec.name, _requested_version(spec), spec.version_label, spec.signature_name, inputs)
        response = predict_pb2.PredictResponse()
        response.model_spec.CopyFrom(spec)
        response.model_spec.version.value = version
        response.model_spec.signature_name = spec.signature_name or "serving_default"
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response

    @_abort_on_error
    def GetModelMetadata(self, request, context):
        spec = request.model_spec
        if list(request.metadata_field) != ["signature_def"]:
            raise ModelError("Metadata field signature_def is the only one supported",
                             grpc.StatusCode.INVALID_ARGUMENT)
        version, _ = self.repository.resolve(spec.name, _requested_version(spec), spec.version_label)
        signatures = self.repository.signature_defs(spec.name, version)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(signatures)
        return response


def _version_statuses(repository, name, version=None, label=None):
    """`[(version, broken error or None)]` for a status request."""
    if version is not None or label:
        version, _ = repository.resolve(name, version, label)
        return [(version, None)]
    return [(number, repository.broken(name, number)) for number in repository.versions(name)]


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, repository):
        self.repository = repository

    @_abort_on_error
    def GetModelStatus(self, request, context):
        spec = request.model_spec
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, error in _version_statuses(self.repository, spec.name, _requested_version(spec),
                                                spec.version_label):
            status = response.model_version_status.add(version=version)
            if error:
                status.state = get_model_status_pb2.ModelVersionStatus.END
                status.status.error_code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
                status.status.error_message = error
            else:
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


class RequestError(ValueError):
    """A malformed REST request; `code` is the HTTP status to answer."""

    def __init__(self, message, code=400):
        super().__init__(message)
        self.code = code


def _decode_b64(values, name):
    """`from_json_values` naming the input whose base64 is bad."""
    try:
        return from_json_values(values)
    except (binascii.Error, TypeError, ValueError) as error:
        raise RequestError(f"input {name!r}: bad {{\"b64\": ...}} value ({error})") from None


def parse_predict_body(body, limits):
    """The named inputs of a REST `:predict` body (TF Serving's row
    `instances` or columnar `inputs` format), as numpy arrays; raises
    `RequestError` (400) naming what is wrong. A bare list without input
    names is the `text` input.

    Example:
    >>> parse_predict_body({"instances": ["great phone"]}, RequestLimits())
    {'text': array(['great phone'], dtype=object)}
    """
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, received {type(body).__name__}")
    if ("instances" in body) == ("inputs" in body):
        raise RequestError("the request body must have exactly one of 'instances' and 'inputs'")
    if "signature_name" in body and not isinstance(body["signature_name"], str):
        raise RequestError(f"'signature_name' must be a string, received {body['signature_name']!r:.60}")
    if "inputs" in body:
        inputs = body["inputs"]
        inputs = inputs if isinstance(inputs, dict) and set(inputs) != {"b64"} else {"text": inputs}
    else:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise RequestError(f"'instances' must be a non-empty list, received {rows!r:.60}")
        limits.check_rows("instances", len(rows))
        if all(isinstance(row, dict) and set(row) != {"b64"} for row in rows):
            names = list(rows[0])
            for number, row in enumerate(rows):
                if sorted(row) != sorted(names):
                    raise RequestError(f"instances[{number}] has inputs {sorted(row)}; instances[0] has "
                                       f"{sorted(names)}")
            inputs = {name: [row[name] for row in rows] for name in names}
        elif any(isinstance(row, dict) and set(row) != {"b64"} for row in rows):
            raise RequestError("'instances' mixes named (objects) and unnamed rows")
        else:
            inputs = {"text": rows}
    arrays = {}
    for name, values in inputs.items():
        if isinstance(values, list):
            limits.check_rows(name, len(values))
        values = _decode_b64(values, name)
        try:
            array = np.asarray(values, dtype=object if holds_text(values) else None)
        except ValueError as error:
            raise RequestError(f"input {name!r} is not a rectangular array ({error})") from None
        if array.dtype == object and not all(isinstance(v, (str, bytes)) for v in array.reshape(-1)):
            raise RequestError(f"input {name!r} is ragged or mixes strings with other values")
        if array.dtype.kind not in "biufO":
            raise RequestError(f"input {name!r} holds {array.dtype} values; expected numbers or strings")
        arrays[name] = array
    return arrays


class _RestHandler(http.server.BaseHTTPRequestHandler):
    repository = None
    limits = RequestLimits()
    timeout = RequestLimits.read_timeout  # Socket timeout for reading a request (StreamRequestHandler).
    protocol_version = "HTTP/1.0"
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
        try:
            self._answer(method)
        except RequestError as error:
            self._send(error.code, {"error": str(error)})
        except ModelError as error:
            code = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.RESOURCE_EXHAUSTED: 413}.get(error.status, 400)
            self._send(code, {"error": str(error)})
        except (TimeoutError, ConnectionError):
            self.close_connection = True
        except Exception as error:  # noqa: BLE001  (a request must never take the server down)
            self._send(500, {"error": f"{type(error).__name__}: {_first_line(error)}"})

    def _answer(self, method):
        match = self.path_pattern.match(self.path)
        if not match:
            raise RequestError(f"Malformed request: {method} {self.path}", 404)
        name, version, label, action = match.groups()
        version = int(version) if version else None
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
            return self._send(200, {"model_version_status": [
                {"version": str(number), "state": "END" if error else "AVAILABLE",
                 "status": {"error_code": "FAILED_PRECONDITION" if error else "OK", "error_message": error or ""}}
                for number, error in _version_statuses(self.repository, name, version, label)
            ]})
        raise RequestError(f"Unsupported method {method} for {self.path}", 405)

    def _body(self):
        """The request body, after checking `Content-Length` against the
        limit; a client that stalls is cut off by the socket timeout."""
        declared = self.headers.get("Content-Length")
        if declared is None:
            raise RequestError("a POST needs a Content-Length header", 411)
        if not declared.strip().isdigit():
            raise RequestError(f"bad Content-Length {declared!r}")
        length = int(declared)
        if length > self.limits.max_bytes:
            raise RequestError(f"request of {length} bytes exceeds {self.limits.max_bytes} bytes", 413)
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            raise RequestError(f"the request body did not arrive within {self.timeout} s", 408) from None
        if len(data) != length:
            raise RequestError(f"the request body ended after {len(data)} of {length} bytes")
        return data

    def _predict(self, name, version, label):
        data = self._body()
        try:
            body = json.loads(data)
        except (ValueError, RecursionError) as error:
            raise RequestError(f"JSON Parse error: {error}") from None
        inputs = parse_predict_body(body, self.limits)
        _, outputs = self.repository.run(name, version, label, body.get("signature_name"), inputs)
        if "inputs" in body:
            return self._send(200, {"outputs": {k: _to_json(v) for k, v in outputs.items()}})
        rows = [{k: _to_json(v[i]) for k, v in outputs.items()} for i in range(len(next(iter(outputs.values()))))]
        return self._send(200, {"predictions": rows})

    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    def do_DELETE(self):
        self._route("DELETE")

    def do_PATCH(self):
        self._route("PATCH")


class LocalServer:
    """gRPC and REST endpoints over a `ModelRepository` on this machine.

    Ports are bound exclusively: a port already in use (by another server,
    or another `serve-local`) stops this one with an `OSError` naming it.

    Args:
        base_path: the TF Serving base folder (`<name>/<version>/`).
        grpc_port: gRPC port (0 picks a free one; see `.grpc_port`).
        rest_port: REST port (0 picks a free one), or `None` for no REST.
        host: the address to bind; loopback by default.
        max_request_bytes: larger requests are refused (gRPC
            RESOURCE_EXHAUSTED, REST 413).
        version_labels: optional `{name: {label: version}}`.
        limits: a `RequestLimits` (its `max_bytes` is replaced by
            `max_request_bytes` when that is given).
    """

    def __init__(self, base_path, grpc_port=8500, rest_port=8501, host="127.0.0.1",
                 max_request_bytes=None, version_labels=None, limits=None):
        limits = limits or RequestLimits()
        if max_request_bytes is not None:
            limits = dataclasses.replace(limits, max_bytes=max_request_bytes)
        self.limits = limits
        self.repository = ModelRepository(base_path, version_labels)
        self._grpc = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=8),
            options=[("grpc.max_receive_message_length", limits.max_bytes), ("grpc.so_reuseport", 0)],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
            _PredictionService(self.repository, limits), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(self.repository), self._grpc)
        try:
            self.grpc_port = self._grpc.add_insecure_port(f"{host}:{grpc_port}")
        except RuntimeError:
            self.grpc_port = 0
        if not self.grpc_port:
            raise OSError(errno.EADDRINUSE, f"cannot serve gRPC on {host}:{grpc_port}: the port is in use")
        self._http = None
        if rest_port is not None:
            handler = type("Handler", (_RestHandler,), {
                "repository": self.repository, "limits": limits, "timeout": limits.read_timeout})
            try:
                self._http = http.server.ThreadingHTTPServer((host, rest_port), handler)
            except OSError as error:
                self._grpc.stop(None)
                raise OSError(error.errno, f"cannot serve REST on {host}:{rest_port}: {error.strerror}") from None
            self._http.daemon_threads = True
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
