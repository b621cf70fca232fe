"""A local stand-in for TF Serving, for trying exports without Docker.

NOT a production server: it runs SavedModels in this Python process, each
version in a session over its graph (`session_bundle`), one request at a
time a model. Use the official `tensorflow/serving` image for anything real (see `export/README.md`).

It reads the TF Serving layout (`<base>/<name>/<version>/`, or the models of
a `--model_config_file`), serves what each model's version policy says (the
newest version by default) and picks up a new version as soon as its folder
appears (exports are renamed into place whole). It answers gRPC `Predict`,
`Classify`, `Regress`, `MultiInference`, `GetModelMetadata`,
`GetModelStatus` and `HandleReloadConfigRequest` with TF Serving's own
protos, the REST API's `:predict`, `:classify`, `:regress`, `/metadata` and
status calls with its JSON, and `/monitoring/prometheus/metrics`.
`docs/serving.md` lists what still differs from TF Serving.

Example:
>>> server = LocalServer("exports", grpc_port=8500, rest_port=8501)
>>> server.start()
"""

import concurrent.futures
import dataclasses
import errno
import functools
import http.server
import json
import re
import socket
import threading
import time

import grpc
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
    status_pb2,
)


from tl_keras.serving import inference
from tl_keras.serving.metrics import RequestMetrics
from tl_keras.serving.model_repository import ModelError, ModelRepository, first_line, models_from_config
from tl_keras.serving.requests import RequestError, RequestLimits, parse_predict_body, tensor_from_proto

HTTP_STATUS = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
               grpc.StatusCode.UNIMPLEMENTED: 501, grpc.StatusCode.INTERNAL: 500,
               grpc.StatusCode.DEADLINE_EXCEEDED: 408}


def _requested_version(spec):
    return spec.version.value if spec.HasField("version") else None


class _Calls:
    """The gRPC services' shared call path: every call counted and timed,
    a `ModelError` ending it with its own status, anything else INTERNAL
    (never UNKNOWN); a request never takes the server down."""

    def __init__(self, repository, limits, metrics):
        self.repository, self.limits, self.metrics = repository, limits, metrics
        # Signatures run here, not on the gRPC or HTTP threads, so a request
        # can end at its deadline while a call TensorFlow cannot interrupt
        # keeps one of these workers.
        self._pool = concurrent.futures.ThreadPoolExecutor(limits.compute_workers, thread_name_prefix="signature")
        self._free = threading.BoundedSemaphore(limits.compute_workers)

    def compute(self, run, deadline=None):
        """`run()` on a signature worker, within `limits.request_timeout` (or
        the client's shorter `deadline`, in seconds); refused at once when
        every worker is busy."""
        if not self._free.acquire(timeout=0.1):
            raise ModelError(f"all {self.limits.compute_workers} signature workers are busy (a signature may be "
                             "stuck); try again later", grpc.StatusCode.RESOURCE_EXHAUSTED)
        future = self._pool.submit(run)
        future.add_done_callback(lambda done: self._free.release())
        timeout = self.limits.request_timeout if deadline is None else min(deadline, self.limits.request_timeout)
        try:
            return future.result(timeout=max(timeout, 0.0))
        except concurrent.futures.TimeoutError:
            raise ModelError(f"the signature did not answer within {timeout:g} s (the server's request timeout is "
                             f"{self.limits.request_timeout:g} s)", grpc.StatusCode.DEADLINE_EXCEEDED) from None

    def guarded(self, api, method):
        @functools.wraps(method)
        def call(request, context):
            started, code = time.perf_counter(), "OK"
            try:
                return method(request, context)
            except ModelError as error:
                code = error.status.name
                context.abort(error.status, str(error))
            except Exception as error:  # noqa: BLE001  (a request must never take the server down)
                code = "INTERNAL"
                context.abort(grpc.StatusCode.INTERNAL, f"{type(error).__name__}: {first_line(error)}")
            finally:
                name = getattr(getattr(request, "model_spec", None), "name", "") or ""
                self.record(name, api, code, time.perf_counter() - started)

        return call

    def record(self, name, api, code, seconds):
        """Counts a call, for a served model only: requests naming unknown
        models would otherwise add label sets without end."""
        try:
            self.repository.model(name)
        except ModelError:
            return
        self.metrics.record(name, api, code, seconds)

    def predict(self, spec, inputs, output_filter=(), deadline=None):
        version, function, _ = inference.signature(self.repository, spec.name, _requested_version(spec),
                                                   spec.version_label, spec.signature_name)
        outputs = self.compute(lambda: inference.call(function, spec.signature_name or "serving_default", inputs),
                               deadline)
        return version, inference.filter_outputs(outputs, list(output_filter))

    def examples(self, spec, examples, method, deadline=None):
        version, function, method_name = inference.signature(
            self.repository, spec.name, _requested_version(spec), spec.version_label, spec.signature_name)
        self.limits.check_rows("examples", len(examples))
        run = inference.classify if method == inference.CLASSIFY else inference.regress
        return version, self.compute(
            lambda: run(function, spec.signature_name or "serving_default", method_name, examples), deadline)


def _fill_classifications(result, rows):
    for pairs in rows:
        row = result.classifications.add()
        for label, score in pairs:
            row.classes.add(label=label, score=score or 0.0)


def _fill_regressions(result, values):
    for value in values:
        result.regressions.add(value=value)


def _response_spec(response_spec, spec, version):
    response_spec.CopyFrom(spec)
    response_spec.version.value = version
    response_spec.signature_name = spec.signature_name or "serving_default"


class _PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, calls):
        self.calls = calls
        for name in ("Predict", "Classify", "Regress", "MultiInference", "GetModelMetadata"):
            setattr(self, name, calls.guarded(name.lower(), getattr(self, "_" + name)))

    def _Predict(self, request, context):
        inputs = {name: tensor_from_proto(name, proto, self.calls.limits) for name, proto in request.inputs.items()}
        version, outputs = self.calls.predict(request.model_spec, inputs, request.output_filter,
                                              context.time_remaining())
        response = predict_pb2.PredictResponse()
        _response_spec(response.model_spec, request.model_spec, version)
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(inference.tensor_proto(value))
        return response

    def _Classify(self, request, context):
        return self._examples(request, context, inference.CLASSIFY, classification_pb2.ClassificationResponse(),
                              _fill_classifications)

    def _Regress(self, request, context):
        return self._examples(request, context, inference.REGRESS, regression_pb2.RegressionResponse(),
                              _fill_regressions)

    def _examples(self, request, context, method, response, fill):
        version, results = self.calls.examples(request.model_spec, inference.examples_from_input(request.input),
                                               method, context.time_remaining())
        _response_spec(response.model_spec, request.model_spec, version)
        fill(response.result, results)
        return response

    def _MultiInference(self, request, context):
        examples = inference.examples_from_input(request.input)
        response = inference_pb2.MultiInferenceResponse()
        for task in request.tasks:
            if task.method_name not in (inference.CLASSIFY, inference.REGRESS):
                raise ModelError(f"Unsupported signature method_name: {task.method_name}",
                                 grpc.StatusCode.UNIMPLEMENTED)
            version, results = self.calls.examples(task.model_spec, examples, task.method_name,
                                                   context.time_remaining())
            result = response.results.add()
            _response_spec(result.model_spec, task.model_spec, version)
            if task.method_name == inference.CLASSIFY:
                _fill_classifications(result.classification_result, results)
            else:
                _fill_regressions(result.regression_result, results)
        return response

    def _GetModelMetadata(self, request, context):
        spec = request.model_spec
        if list(request.metadata_field) != ["signature_def"]:
            raise ModelError("Metadata field signature_def is the only one supported",
                             grpc.StatusCode.INVALID_ARGUMENT)
        version, _ = self.calls.repository.resolve(spec.name, _requested_version(spec), spec.version_label)
        signatures = self.calls.repository.signature_defs(spec.name, version)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = spec.name
        response.model_spec.version.value = version
        response.metadata["signature_def"].Pack(signatures)
        return response


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, calls):
        self.calls = calls
        self.GetModelStatus = calls.guarded("status", self._GetModelStatus)
        self.HandleReloadConfigRequest = calls.guarded("reload", self._HandleReloadConfigRequest)

    def _GetModelStatus(self, request, context):
        spec = request.model_spec
        response = get_model_status_pb2.GetModelStatusResponse()
        for version, error in self.calls.repository.statuses(spec.name, _requested_version(spec),
                                                             spec.version_label):
            status = response.model_version_status.add(version=version)
            if error:
                status.state = get_model_status_pb2.ModelVersionStatus.END
                status.status.error_code = grpc.StatusCode.FAILED_PRECONDITION.value[0]
                status.status.error_message = error
            else:
                status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        return response

    def _HandleReloadConfigRequest(self, request, context):
        try:
            models = models_from_config(request.config)
        except ValueError as error:
            raise ModelError(str(error), grpc.StatusCode.INVALID_ARGUMENT) from None
        self.calls.repository.reload(models)
        return model_management_pb2.ReloadConfigResponse(status=status_pb2.StatusProto(error_code=0))


# Python's JSON messages as RapidJSON (TF Serving's parser) words them.
RAPIDJSON_MESSAGES = {"Extra data": "The document root must not be followed by other values.",
                      "Expecting property name enclosed in double quotes": "Missing a name for object member.",
                      "Expecting ':' delimiter": "Missing a colon after a name of object member.",
                      "Unterminated string starting at": "Missing a closing quotation mark in string."}


def parse_error(data, error):
    """RapidJSON's message for a body `json.loads` refused."""
    if not data.strip():
        return "The document is empty."
    if error.msg == "Expecting ',' delimiter":
        return ("Missing a comma or ']' after an array element." if _innermost_bracket(error.doc[:error.pos]) == "["
                else "Missing a comma or '}' after an object member.")
    return RAPIDJSON_MESSAGES.get(error.msg, "Invalid value.")


def _innermost_bracket(text):
    """The innermost `[` or `{` still open in the JSON prefix `text`."""
    stack, in_string, escaped = [], False, False
    for char in text:
        if in_string:
            in_string, escaped = (char != '"' or escaped), (char == "\\" and not escaped)
        elif char == '"':
            in_string = True
        elif char in "[{":
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else None


class _RestHandler(http.server.BaseHTTPRequestHandler):
    calls = None
    timeout = RequestLimits.read_timeout  # Socket timeout for reading a request (StreamRequestHandler).
    protocol_version = "HTTP/1.0"
    path_pattern = re.compile(
        r"^/v1/models/([^/:]+)(?:/versions/(\d+)|/labels/([^/:]+))?(/metadata|:predict|:classify|:regress)?$")

    def log_message(self, format, *args):  # Quiet: tests and demos read stdout.
        pass

    def setup(self):
        super().setup()
        # The whole request (headers and body) within `request_deadline`:
        # the socket timeout bounds each read, not a client that trickles.
        self._expired = False
        self._deadline = threading.Timer(self.calls.limits.request_deadline, self._expire)
        self._deadline.daemon = True
        self._deadline.start()

    def _expire(self):
        self._expired = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def handle(self):
        try:
            super().handle()
        except OSError:  # A connection cut at its deadline, or by the client.
            self.close_connection = True

    def finish(self):
        self._deadline.cancel()
        try:
            super().finish()
        except OSError:
            pass

    def _send(self, code, body, content_type="application/json"):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, method):
        started, code, name = time.perf_counter(), 200, ""
        if method != "POST":
            self._deadline.cancel()  # Headers read: the request is whole.
        try:
            if method == "GET" and self.path == "/monitoring/prometheus/metrics":
                return self._send(200, self.calls.metrics.prometheus(), "text/plain; version=0.0.4")
            match = self.path_pattern.match(self.path)
            if not match and method == "GET" and self.path.rstrip("/") == "/v1/models":
                raise RequestError(f"Missing model name in request: {method} {self.path}")
            if not match:
                raise RequestError(f"Malformed request: {method} {self.path}")
            name = match.group(1)
            self._answer(method, *match.groups())
        except RequestError as error:
            code = error.code
            self._send(code, {"error": str(error)})
        except ModelError as error:
            code = HTTP_STATUS.get(error.status, 400)
            self._send(code, {"error": str(error)})
        except (TimeoutError, ConnectionError):
            code, self.close_connection = 408, True
        except Exception as error:  # noqa: BLE001  (a request must never take the server down)
            code = 500
            self._send(500, {"error": f"{type(error).__name__}: {first_line(error)}"})
        finally:
            if name:
                self.calls.record(name, f"rest_{method.lower()}", str(code), time.perf_counter() - started)

    def _answer(self, method, name, version, label, action):
        if version and int(version) > 2 ** 63 - 1:  # TF Serving's versions are int64.
            raise RequestError(f"Failed to convert version: {version} to numeric.")
        version = int(version) if version else None
        repository = self.calls.repository
        if method == "POST" and action in (":predict", ":classify", ":regress"):
            body = self._json_body()
            if action == ":predict":
                return self._predict(name, version, label, body)
            return self._examples(name, version, label, body, action)
        if method == "GET" and action == "/metadata":
            version, _ = repository.resolve(name, version, label)
            signatures = repository.signature_defs(name, version)
            return self._send(200, {
                "model_spec": {"name": name, "signature_name": "", "version": str(version)},
                # As TF Serving prints it: fields at their defaults too (`unknown_rank: false`, `name: ""`).
                "metadata": {"signature_def": json_format.MessageToDict(
                    signatures, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)},
            })
        if method == "GET" and action is None:
            return self._send(200, {"model_version_status": [
                {"version": str(number), "state": "END" if error else "AVAILABLE",
                 "status": {"error_code": "FAILED_PRECONDITION" if error else "OK", "error_message": error or ""}}
                for number, error in repository.statuses(name, version, label)
            ]})
        raise RequestError(f"Malformed request: {method} {self.path}")

    def _json_body(self):
        """The request body as JSON, after checking `Content-Length` against
        the limit; a client that stalls is cut off by the socket timeout."""
        declared = self.headers.get("Content-Length")
        if declared is None:
            raise RequestError("a POST needs a Content-Length header", 411)
        if not declared.strip().isdigit():
            raise RequestError(f"bad Content-Length {declared!r}")
        length, limit = int(declared), self.calls.limits.max_bytes
        if length > limit:
            raise RequestError(f"request of {length} bytes exceeds {limit} bytes", 413)
        try:
            data = self.rfile.read(length)
        except TimeoutError:
            raise RequestError(f"the request body did not arrive within {self.timeout} s", 408) from None
        except OSError:
            data = b""
        self._deadline.cancel()
        if self._expired:
            raise TimeoutError(f"the request did not arrive within {self.calls.limits.request_deadline:g} s")
        if len(data) != length:
            raise RequestError(f"the request body ended after {len(data)} of {length} bytes")
        try:
            body = json.loads(data)
        except json.JSONDecodeError as error:
            raise RequestError(f"JSON Parse error: {parse_error(data, error)} at offset: {error.pos}") from None
        except (ValueError, RecursionError) as error:
            raise RequestError(f"JSON Parse error: {error}") from None
        if not isinstance(body, dict):
            raise RequestError(f"the request body must be a JSON object, received {type(body).__name__}")
        if "signature_name" in body and not isinstance(body["signature_name"], str):
            raise RequestError(f"'signature_name' must be a string, received {body['signature_name']!r:.60}")
        return body

    def _predict(self, name, version, label, body):
        inputs = parse_predict_body(body, self.calls.limits)
        signature_name = body.get("signature_name") or "serving_default"
        version, function, _ = inference.signature(self.calls.repository, name, version, label, signature_name)
        if None in inputs:  # Unnamed: the signature's one input.
            names = sorted(inference.input_specs(function))
            if len(names) != 1:
                raise RequestError(f"the request names no inputs, but signature {signature_name!r} takes "
                                   f"{len(names)}: {names}; name them")
            inputs = {names[0]: inputs[None]}
        outputs = self.calls.compute(lambda: inference.call(function, signature_name, inputs))
        return self._send(200, inference.rest_predictions(outputs, columnar="inputs" in body))

    def _examples(self, name, version, label, body, action):
        method = inference.CLASSIFY if action == ":classify" else inference.REGRESS
        spec = predict_pb2.PredictRequest().model_spec
        spec.name, spec.signature_name = name, body.get("signature_name", "")
        if version is not None:
            spec.version.value = version
        if label:
            spec.version_label = label
        _, results = self.calls.examples(spec, inference.examples_from_json(body), method)
        if method == inference.CLASSIFY:
            results = [[[label, score] for label, score in pairs] for pairs in results]
        return self._send(200, {"results": results})

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
        base_path: a folder of `<name>/<version>/` SavedModels (every
            sub-folder a model), or `None` with `models`.
        grpc_port: gRPC port (0 picks a free one; see `.grpc_port`).
        rest_port: REST port (0 picks a free one), or `None` for no REST.
        host: the address to bind; loopback by default.
        max_request_bytes: larger requests are refused (gRPC
            RESOURCE_EXHAUSTED, REST 413).
        version_labels: optional `{name: {label: version}}`.
        limits: a `RequestLimits` (its `max_bytes` is replaced by
            `max_request_bytes` when that is given).
        models: `ServedModel`s (see `read_model_config`) instead of
            `base_path`.
    """

    def __init__(self, base_path=None, grpc_port=8500, rest_port=8501, host="127.0.0.1",
                 max_request_bytes=None, version_labels=None, limits=None, models=None):
        limits = limits or RequestLimits()
        if max_request_bytes is not None:
            limits = dataclasses.replace(limits, max_bytes=max_request_bytes)
        self.limits = limits
        self.repository = ModelRepository(base_path, models, version_labels)
        self.metrics = RequestMetrics()
        calls = _Calls(self.repository, limits, self.metrics)
        self._grpc = grpc.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=8),
            options=[("grpc.max_receive_message_length", limits.max_bytes), ("grpc.so_reuseport", 0)],
        )
        prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_PredictionService(calls), self._grpc)
        model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(calls), self._grpc)
        try:
            self.grpc_port = self._grpc.add_insecure_port(f"{host}:{grpc_port}")
        except RuntimeError:
            self.grpc_port = 0
        if not self.grpc_port:
            raise OSError(errno.EADDRINUSE, f"cannot serve gRPC on {host}:{grpc_port}: the port is in use")
        self._http = None
        if rest_port is not None:
            handler = type("Handler", (_RestHandler,), {"calls": calls, "timeout": limits.read_timeout})
            try:
                self._http = http.server.ThreadingHTTPServer((host, rest_port), handler)
            except OSError as error:
                self._grpc.stop(None)
                raise OSError(error.errno, f"cannot serve REST on {host}:{rest_port}: {error.strerror}") from None
            self._http.daemon_threads = True
            self.rest_port = self._http.server_address[1]
        self.host = host

    def load_all(self):
        """Loads every model's served versions now (replaying their warm-up
        requests), as TF Serving does at start, instead of on first use.
        Returns `{name: [versions]}`."""
        return {name: self.repository.served_versions(name) for name in self.repository.names()}

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
