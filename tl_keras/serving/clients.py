"""Clients for TensorFlow Serving: gRPC (`tensorflow-serving-api`) and REST.

Both speak to a real TF Serving (`export/docker-compose.yml`) or to the local
stand-in (`tl-keras serve-local`), take a timeout and a version or version
label, and fail fast with a `ServingError` naming the address, the model and
the signature: server down, unknown model, wrong signature or input name, or a
request too large.

Example:
>>> client = GrpcClient("localhost:8500", "reviews")
>>> client.predict(["great phone", "broke in a week"])["label"]
array(['1', '0'], dtype=object)
"""

import json
import urllib.error
import urllib.request

import numpy as np

from tl_keras.serving.rest_json import from_json_values, holds_text, to_json_values

# The REST client needs neither gRPC nor TensorFlow (whose import alone takes
# seconds); `GrpcClient` imports them when it is made.

DEFAULT_MAX_REQUEST_BYTES = 4 * 1024 * 1024  # gRPC's default message limit.
DEFAULT_MAX_BATCH_SIZE = 256  # Rows a request; more go as several requests.


class ServingError(RuntimeError):
    """A request TF Serving could not answer, with where it went."""


def _as_array(values):
    array = np.asarray(values)
    if array.dtype.kind in "UO":
        array = np.asarray([v.encode() if isinstance(v, str) else v for v in array.reshape(-1)], object).reshape(array.shape)
    return array


def _decode(array):
    if array.dtype == object:
        return np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v, otypes=[object])(array)
    return array


class _Client:
    protocol = ""

    def __init__(self, address, model_name, signature="serving_default", version=None, version_label=None,
                 timeout=10.0, max_request_bytes=DEFAULT_MAX_REQUEST_BYTES, max_batch_size=DEFAULT_MAX_BATCH_SIZE):
        if version is not None and version_label is not None:
            raise ValueError(f"Give a version or a version label, not both (received {version!r} and {version_label!r}).")
        if not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise ValueError(f"`max_batch_size` must be an integer >= 1, received {max_batch_size!r}.")
        self.max_batch_size = max_batch_size
        self.address = address
        self.model_name = model_name
        self.signature = signature
        self.version = version
        self.version_label = version_label
        self.timeout = timeout
        self.max_request_bytes = max_request_bytes

    def _where(self):
        version = f" version {self.version}" if self.version is not None else ""
        label = f" label {self.version_label!r}" if self.version_label else ""
        return f"{self.protocol} {self.address} model {self.model_name!r}{version}{label} signature {self.signature!r}"

    def _error(self, message):
        return ServingError(f"{self._where()}: {message}")

    def predict(self, values, input_name="text"):
        """Sends `values` (a list of texts, or encoded images as bytes) as
        `input_name`, or a dict of input name to values for signatures with
        several inputs, and returns the outputs as numpy arrays by name.
        More rows than `max_batch_size` go as several requests, whose
        outputs are joined in order.

        Example:
        >>> client.predict({"user_id": ["u1"], "recent_item_ids": [["kit-001"]]})["item_ids"]
        """
        inputs = _named_inputs(values, input_name)
        rows = {len(value) for value in inputs.values() if isinstance(value, (list, tuple, np.ndarray))}
        if len(rows) != 1 or next(iter(rows)) <= self.max_batch_size:
            return self._predict(inputs)
        total, parts = next(iter(rows)), []
        for start in range(0, total, self.max_batch_size):
            parts.append(self._predict({name: value[start:start + self.max_batch_size]
                                        for name, value in inputs.items()}))
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def _check_size(self, size):
        if size > self.max_request_bytes:
            raise self._error(
                f"request of {size} bytes is larger than the {self.max_request_bytes}-byte limit; "
                "send fewer inputs a request."
            )


class GrpcClient(_Client):
    """A TF Serving gRPC client (`PredictionService`, `ModelService`).

    Args:
        address: `host:port` of the gRPC endpoint (TF Serving's 8500).
        model_name: the model's name on the server.
        signature: the signature to call.
        version: an integer version; the newest if neither it nor
            `version_label` is given.
        version_label: a version label such as `"stable"`.
        timeout: seconds a call may take.
        max_request_bytes: larger requests fail before they are sent.
        max_batch_size: the most rows a request; `predict` splits larger
            inputs into several requests.

    Example:
    >>> GrpcClient("localhost:8500", "reviews", timeout=2).status()
    [{'version': 3, 'state': 'AVAILABLE', 'error_code': 0, 'error_message': ''}]
    """

    protocol = "gRPC"

    def __init__(self, address, model_name, **kwargs):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        super().__init__(address, model_name, **kwargs)
        limit = max(self.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES) + 1024
        self._channel = grpc.insecure_channel(address, options=[("grpc.max_send_message_length", limit)])
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)

    def close(self):
        self._channel.close()

    def _model_spec(self, signature=True):
        from tensorflow_serving.apis import model_pb2

        spec = model_pb2.ModelSpec(name=self.model_name)
        if signature:
            spec.signature_name = self.signature
        if self.version is not None:
            spec.version.value = int(self.version)
        elif self.version_label:
            spec.version_label = self.version_label
        return spec

    def _call(self, method, request):
        import grpc

        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            raise self._error(f"{error.code().name}: {error.details()}") from None

    def _predict(self, inputs):
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest(model_spec=self._model_spec())
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(_as_array(value)))
        self._check_size(request.ByteSize())
        response = self._call(self._predictions.Predict, request)
        return {name: _decode(tf.make_ndarray(proto)) for name, proto in response.outputs.items()}

    def metadata(self):
        """Returns the model's signatures as TF Serving reports them."""
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=self._model_spec(signature=False))
        request.metadata_field.append("signature_def")
        response = self._call(self._predictions.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        return {
            "version": response.model_spec.version.value,
            "signatures": {name: _signature_dict(sig) for name, sig in signatures.signature_def.items()},
        }

    def status(self):
        """Returns the versions the server has, with their states."""
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest(model_spec=self._model_spec(signature=False))
        response = self._call(self._models.GetModelStatus, request)
        return [
            {
                "version": s.version,
                "state": get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
                "error_code": s.status.error_code,
                "error_message": s.status.error_message,
            }
            for s in response.model_version_status
        ]


def _signature_dict(signature):
    from tensorflow.core.framework import types_pb2

    def tensors(infos):
        return {
            name: {"dtype": dtype_name(types_pb2.DataType.Name(info.dtype)),
                   "shape": [d.size for d in info.tensor_shape.dim]}
            for name, info in infos.items()
        }

    return {"inputs": tensors(signature.inputs), "outputs": tensors(signature.outputs)}


class RestClient(_Client):
    """A TF Serving REST client (`/v1/models/NAME[...]`).

    Args are those of `GrpcClient`; `address` is `host:port` of the REST
    endpoint (TF Serving's 8501).

    Example:
    >>> RestClient("localhost:8501", "reviews").predict(["great phone"])["label"]
    array(['1'], dtype=object)
    """

    protocol = "REST"

    def _url(self, suffix=""):
        url = f"http://{self.address}/v1/models/{self.model_name}"
        if self.version is not None:
            url += f"/versions/{int(self.version)}"
        elif self.version_label:
            url += f"/labels/{self.version_label}"
        return url + suffix

    def _request(self, url, body=None):
        data = None if body is None else json.dumps(body).encode()
        if data is not None:
            self._check_size(len(data))
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as error:
            try:
                message = json.loads(error.read()).get("error", "")
            except ValueError:
                message = error.reason
            raise self._error(f"HTTP {error.code}: {message}") from None
        except (urllib.error.URLError, OSError) as error:
            raise self._error(f"cannot connect: {getattr(error, 'reason', error)}") from None

    def _predict(self, inputs):
        # Columnar `inputs` format; bytes such as encoded images go as
        # `{"b64": ...}`, as TF Serving's REST API wants them.
        inputs = {name: to_json_values(value) for name, value in inputs.items()}
        body = {"signature_name": self.signature, "inputs": inputs}
        outputs = self._request(self._url(":predict"), body)["outputs"]
        if not isinstance(outputs, dict):  # TF Serving leaves a single output unnamed.
            signatures = self.metadata()["signatures"]
            outputs = {next(iter(signatures[self.signature]["outputs"])): outputs}
        outputs = {name: from_json_values(value) for name, value in outputs.items()}
        return {name: np.asarray(value, dtype=object if holds_text(value) else None) for name, value in outputs.items()}

    def metadata(self):
        """Returns the model's signatures as TF Serving reports them."""
        response = self._request(self._url("/metadata"))
        signatures = response["metadata"]["signature_def"]["signature_def"]
        return {
            "version": int(response["model_spec"]["version"]),
            "signatures": {
                name: {
                    part: {
                        input_name: {
                            "dtype": dtype_name(info["dtype"]),
                            "shape": [int(d["size"]) for d in info["tensor_shape"].get("dim", [])],
                        }
                        for input_name, info in sig[part].items()
                    }
                    for part in ("inputs", "outputs")
                }
                for name, sig in signatures.items()
            },
        }

    def status(self):
        """Returns the versions the server has, with their states."""
        response = self._request(self._url())
        return [
            {
                "version": int(s["version"]),
                "state": s["state"],
                "error_code": 0 if s["status"]["error_code"] == "OK" else s["status"]["error_code"],
                "error_message": s["status"].get("error_message", ""),
            }
            for s in response["model_version_status"]
        ]


_FLOAT_NAMES = {"DT_HALF": "float16", "DT_FLOAT": "float32", "DT_DOUBLE": "float64"}


def dtype_name(enum_name):
    """TensorFlow's dtype name for a `DataType` enum name (`"DT_FLOAT"` →
    `"float32"`, `"DT_STRING"` → `"string"`), without importing TensorFlow."""
    return _FLOAT_NAMES.get(enum_name, enum_name.removeprefix("DT_").lower())


def _named_inputs(values, input_name):
    return values if isinstance(values, dict) else {input_name: values}
