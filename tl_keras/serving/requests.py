"""Checking a request before anything is built from it: declared tensor
sizes against limits, and TF Serving's REST `:predict` body formats."""

import binascii
import dataclasses
import io
import warnings

import grpc
import numpy as np
import PIL.Image
import tensorflow as tf

from tl_keras.serving.model_repository import ModelError
from tl_keras.serving.rest_json import from_json_values, holds_text


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
        max_string_bytes: the longest single string value (a text, a
            context, an encoded image); TF Serving has no such limit, so
            `serve-local` is stricter here on purpose (a 3 MB context would
            be tokenised whole before any window is cut).
        max_text_bytes: the most bytes of text one input of a request may
            hold in all its rows (images aside): a token takes at least one
            byte, so this bounds what tokenisation makes of the request,
            model for model (1,024 question-answering rows of 3 KB would
            otherwise become thousands of 256-token windows in one batch).
        max_image_pixels: the most pixels an encoded image of an
            `*image_bytes` input may declare in its header (read before it
            is decoded: a 30,000 x 30,000 PNG is a few kilobytes).
        request_timeout: seconds a signature may run for one request; past
            it the request ends DEADLINE_EXCEEDED (REST 408) and the call,
            which TensorFlow cannot interrupt, keeps its worker until it
            returns. A gRPC client's own shorter deadline wins.
        compute_workers: signatures running at once; with all of them busy
            (stuck signatures, say) a request is refused at once
            (RESOURCE_EXHAUSTED) instead of waiting behind them.
        request_deadline: seconds a REST client has to send its whole
            request, headers and body (`read_timeout` bounds each read; a
            client sending a byte every few seconds meets this instead).
    """

    max_bytes: int = 4 * 1024 * 1024
    max_tensor_bytes: int = 64 * 1024 * 1024
    max_rows: int = 1024
    read_timeout: float = 10.0
    max_string_bytes: int = 1024 * 1024
    max_text_bytes: int = 256 * 1024
    max_image_pixels: int = 40_000_000
    request_timeout: float = 30.0
    compute_workers: int = 4
    request_deadline: float = 30.0

    def check_images(self, name, values):
        """Each encoded image's declared size against `max_image_pixels`, and
        that it is an image at all, from its header alone (Pillow reads
        headers lazily; TensorFlow would decode first and fail inside the
        graph)."""
        if not str(name).endswith("image_bytes"):
            return
        for row, value in enumerate(values):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)  # Judged below.
                    with PIL.Image.open(io.BytesIO(value)) as image:
                        width, height = image.size
            except PIL.Image.DecompressionBombError as error:  # Past twice Pillow's own limit.
                raise ModelError(f"input {name!r} row {row}: {error}; the server's limit is {self.max_image_pixels} "
                                 "pixels an image", grpc.StatusCode.RESOURCE_EXHAUSTED) from None
            except Exception as error:  # noqa: BLE001  (Pillow raises many kinds on bad bytes)
                raise ModelError(f"input {name!r} row {row} is not a readable image ({type(error).__name__}: "
                                 f"{str(error)[:80]})", grpc.StatusCode.INVALID_ARGUMENT) from None
            if width * height > self.max_image_pixels:
                raise ModelError(f"input {name!r} row {row} is a {width} x {height} image ({width * height} pixels), "
                                 f"more than the server's limit of {self.max_image_pixels} pixels an image",
                                 grpc.StatusCode.RESOURCE_EXHAUSTED)

    def check_strings(self, name, lengths):
        lengths = list(lengths)
        longest = max(lengths, default=0)
        if longest > self.max_string_bytes:
            raise ModelError(f"input {name!r} holds a string of {longest} bytes, more than the server's limit of "
                             f"{self.max_string_bytes} bytes a value", grpc.StatusCode.RESOURCE_EXHAUSTED)
        total = sum(lengths)
        if not str(name).endswith("image_bytes") and total > self.max_text_bytes:
            raise ModelError(f"input {name!r} holds {total} bytes of text in all, more than the server's limit of "
                             f"{self.max_text_bytes} bytes an input (a bound on its tokens); split the request",
                             grpc.StatusCode.RESOURCE_EXHAUSTED)

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
        limits.check_strings(name, (len(value) for value in proto.string_val))
        limits.check_images(name, proto.string_val)
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
    `RequestError` (400) naming what is wrong. Inputs given without names
    (a bare list, as for a signature with one input) are keyed `None`.

    Example:
    >>> parse_predict_body({"instances": ["great phone"]}, RequestLimits())
    {None: array(['great phone'], dtype=object)}
    """
    if not isinstance(body, dict):
        raise RequestError(f"the request body must be a JSON object, received {type(body).__name__}")
    if ("instances" in body) == ("inputs" in body):
        raise RequestError("the request body must have exactly one of 'instances' and 'inputs'")
    if "signature_name" in body and not isinstance(body["signature_name"], str):
        raise RequestError(f"'signature_name' must be a string, received {body['signature_name']!r:.60}")
    if "inputs" in body:
        inputs = body["inputs"]
        inputs = inputs if isinstance(inputs, dict) and set(inputs) != {"b64"} else {None: inputs}
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
            inputs = {None: rows}
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
        if array.dtype == object:
            limits.check_strings(name, (len(v.encode() if isinstance(v, str) else v) for v in array.reshape(-1)))
            limits.check_images(name, [v.encode() if isinstance(v, str) else v for v in array.reshape(-1)])
        if array.dtype.kind not in "biufO":
            raise RequestError(f"input {name!r} holds {array.dtype} values; expected numbers or strings")
        arrays[name] = array
    return arrays
