"""Running a served signature as TF Serving does: Predict with named
inputs checked against the signature, Classify and Regress on `tf.Example`s
(any signature of one string input, as TF Serving with its default
`--enable_signature_method_name_check=false`), and outputs written as TF Serving
writes them (typed value fields in gRPC; single outputs unnamed, float32
values at float32 precision and `*_bytes` outputs as `{"b64": ...}` in REST).
"""

import base64

import grpc
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2

from tl_keras.serving.model_repository import ModelError, first_line
from tl_keras.serving.session_bundle import as_feed

CLASSIFY = "tensorflow/serving/classify"
REGRESS = "tensorflow/serving/regress"


def signature(repository, name, version, label, signature_name):
    """`(version, concrete function, method name)` of a served signature;
    FAILED_PRECONDITION when the model has no such signature, as TF Serving
    answers."""
    version, loaded = repository.resolve(name, version, label)
    signature_name = signature_name or "serving_default"
    if signature_name not in loaded.signatures:
        raise ModelError(f'Serving signature name: "{signature_name}" not found in signature def '
                         f"(have {sorted(loaded.signatures)})", grpc.StatusCode.FAILED_PRECONDITION)
    method = repository.signature_defs(name, version).signature_def[signature_name].method_name
    return version, loaded.signatures[signature_name], method


def input_specs(function):
    """The signature's inputs: `{name: TensorSpec}`."""
    return function.input_specs


def call(function, signature_name, inputs):
    """Calls a `SessionSignature` with numpy inputs after checking their
    names and dtypes, as TF Serving does (not their shapes: the graph's ops
    judge those); returns `{output name: numpy array}`. Stricter on purpose:
    batched inputs must agree on their number of rows."""
    specs = input_specs(function)
    if set(inputs) != set(specs):
        raise ModelError(f"input names {sorted(inputs)} do not match signature {signature_name!r} inputs "
                         f"{sorted(specs)}", grpc.StatusCode.INVALID_ARGUMENT)
    rows = {key: np.shape(value)[0] for key, value in inputs.items()
            if specs[key].shape.rank and specs[key].shape[0] is None and np.ndim(value)}
    if len(set(rows.values())) > 1:  # Batched inputs go row by row together (text and text_pair, say).
        raise ModelError(f"inputs of signature {signature_name!r} must have the same number of rows, received "
                         + ", ".join(f"{key!r} {count}" for key, count in sorted(rows.items())),
                         grpc.StatusCode.INVALID_ARGUMENT)
    feeds = {}
    for key, value in inputs.items():
        spec = specs[key]
        try:
            feeds[key] = as_feed(value, spec)
        except (TypeError, ValueError, tf.errors.OpError):
            kind = value.dtype if isinstance(value, np.ndarray) else np.asarray(value).dtype
            raise ModelError(f"input {key!r} of signature {signature_name!r} must be {spec.dtype.name}, received "
                             f"{kind} values", grpc.StatusCode.INVALID_ARGUMENT) from None
    try:
        return function(**feeds)
    except (TypeError, ValueError, tf.errors.OpError) as error:
        raise ModelError(f"bad input for signature {signature_name!r}: {first_line(error)}",
                         grpc.StatusCode.INVALID_ARGUMENT) from None


def filter_outputs(outputs, names):
    """Only the outputs `names` (a request's `output_filter`), all if empty."""
    if not names:
        return outputs
    unknown = sorted(set(names) - set(outputs))
    if unknown:
        raise ModelError(f"output tensor alias not found in signature: {unknown[0]} (have {sorted(outputs)})",
                         grpc.StatusCode.INVALID_ARGUMENT)
    return {name: outputs[name] for name in names}


def _examples_input(function, signature_name, method):
    specs = input_specs(function)
    if len(specs) != 1 or next(iter(specs.values())).dtype != tf.string:
        raise ModelError(f"signature {signature_name!r} ({method}) must take one string input of serialized "
                         f"tf.Examples, takes {sorted(specs)}", grpc.StatusCode.INVALID_ARGUMENT)
    return next(iter(specs))


def classify(function, signature_name, method, examples):
    """Runs a classify signature on serialized `tf.Example`s; returns a list,
    per example, of `(label, score)` pairs (`label` is `""` without a
    `classes` output, `score` `None` without `scores`)."""
    outputs = call(function, signature_name, {_examples_input(function, signature_name, method):
                                              np.asarray(examples, object)})
    classes, scores = outputs.get("classes"), outputs.get("scores")
    if classes is None and scores is None:
        raise ModelError(f"signature {signature_name!r} has neither a 'classes' nor a 'scores' output",
                         grpc.StatusCode.INVALID_ARGUMENT)
    rows = len(examples)
    width = (classes if classes is not None else scores).reshape(rows, -1).shape[1]
    classes = classes.reshape(rows, width) if classes is not None else np.full((rows, width), b"", object)
    scores = scores.reshape(rows, width) if scores is not None else np.full((rows, width), None, object)
    return [[(label.decode() if isinstance(label, bytes) else str(label), None if score is None else float(score))
             for label, score in zip(label_row, score_row)] for label_row, score_row in zip(classes, scores)]


def regress(function, signature_name, method, examples):
    """Runs a regress signature on serialized `tf.Example`s; returns one
    float per example."""
    outputs = call(function, signature_name, {_examples_input(function, signature_name, method):
                                              np.asarray(examples, object)})
    if "outputs" not in outputs:
        raise ModelError(f"signature {signature_name!r} has no 'outputs' output", grpc.StatusCode.INVALID_ARGUMENT)
    return [float(value) for value in outputs["outputs"].reshape(len(examples))]


def _feature(value, name):
    values = value if isinstance(value, list) else [value]
    if all(isinstance(v, bool) for v in values) or not values:
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))
    if all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        outside = [v for v in values if not -2**63 <= v < 2**63]
        if outside:
            raise ModelError(f"feature {name!r}: {outside[0]} does not fit an int64 feature",
                             grpc.StatusCode.INVALID_ARGUMENT)
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    if all(isinstance(v, str) or (isinstance(v, dict) and set(v) == {"b64"}) for v in values):
        try:
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[
                base64.b64decode(v["b64"], validate=True) if isinstance(v, dict) else v.encode() for v in values]))
        except (ValueError, TypeError) as error:
            raise ModelError(f"feature {name!r}: bad base64 ({error})", grpc.StatusCode.INVALID_ARGUMENT) from None
    raise ModelError(f"feature {name!r} mixes types or holds unsupported values: {value!r:.80}",
                     grpc.StatusCode.INVALID_ARGUMENT)


def examples_from_json(body):
    """Serialized `tf.Example`s from a REST `:classify`/`:regress` body
    (`examples`, optional `context` merged into each)."""
    examples, context = body.get("examples"), body.get("context", {})
    if not isinstance(examples, list) or not examples or not all(isinstance(e, dict) for e in examples):
        raise ModelError("'examples' must be a non-empty list of objects", grpc.StatusCode.INVALID_ARGUMENT)
    if not isinstance(context, dict):
        raise ModelError("'context' must be an object", grpc.StatusCode.INVALID_ARGUMENT)
    serialized = []
    for example in examples:
        clash = sorted(set(example) & set(context))
        if clash:
            raise ModelError(f"feature {clash[0]!r} is in both 'context' and an example",
                             grpc.StatusCode.INVALID_ARGUMENT)
        features = {name: _feature(value, name) for name, value in {**context, **example}.items()}
        serialized.append(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    return serialized


def examples_from_input(request_input):
    """Serialized `tf.Example`s from a gRPC `Input` (`example_list`, or
    `example_list_with_context` with the context merged into each)."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        examples = list(request_input.example_list.examples)
    elif kind == "example_list_with_context":
        context = request_input.example_list_with_context.context
        examples = []
        for example in request_input.example_list_with_context.examples:
            merged = tf.train.Example()
            merged.CopyFrom(context)
            merged.MergeFrom(example)
            examples.append(merged)
    else:
        raise ModelError("Input is empty", grpc.StatusCode.INVALID_ARGUMENT)
    if not examples:
        raise ModelError("Input is empty", grpc.StatusCode.INVALID_ARGUMENT)
    return [example.SerializeToString() for example in examples]


_VALUE_FIELD = {np.float32: "float_val", np.float64: "double_val", np.int32: "int_val", np.int16: "int_val",
                np.int8: "int_val", np.uint8: "int_val", np.uint16: "int_val", np.int64: "int64_val",
                np.uint32: "uint32_val", np.uint64: "uint64_val", np.bool_: "bool_val", np.float16: "half_val"}


def tensor_proto(array):
    """A response `TensorProto` with its values in the typed repeated field
    (`float_val`, `int64_val`, `string_val`, ...), as TF Serving writes
    them and its example clients read them."""
    array = np.asarray(array)
    shape = tf.TensorShape(array.shape).as_proto()
    if array.dtype.kind in "OSU":
        proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape)
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1))
        return proto
    field = _VALUE_FIELD.get(array.dtype.type)
    if field is None:
        return tf.make_tensor_proto(array)
    proto = tensor_pb2.TensorProto(dtype=tf.as_dtype(array.dtype).as_datatype_enum, tensor_shape=shape)
    flat = array.reshape(-1)
    getattr(proto, field).extend((flat.view(np.uint16) if field == "half_val" else flat).tolist())
    return proto


def json_value(array, binary=False):
    """A numpy value as TF Serving writes it in JSON: float32 at float32
    precision (`1.4`, not `1.399999976158142`), strings as text or, for
    `binary` (`*_bytes`) outputs, as `{"b64": ...}`."""
    array = np.asarray(array)
    if array.dtype == np.float32:
        def convert(value):
            return float(str(np.float32(value)))  # The shortest decimal that reads back as this float32.
    elif array.dtype.kind in "OS":
        def convert(value):
            value = value if isinstance(value, bytes) else str(value).encode()
            return {"b64": base64.b64encode(value).decode("ascii")} if binary else value.decode("utf-8", "replace")
    else:
        return array.tolist()
    if not array.ndim:
        return convert(array[()])
    return np.vectorize(convert, otypes=[object])(array).tolist()


def rest_predictions(outputs, columnar):
    """A REST `:predict` answer: `{"outputs": ...}` (columnar) or
    `{"predictions": ...}` (rows); a single output is unnamed."""
    encoded = {name: json_value(value, name.endswith("_bytes")) for name, value in outputs.items()}
    if columnar:
        return {"outputs": next(iter(encoded.values())) if len(encoded) == 1 else encoded}
    if len(encoded) == 1:
        return {"predictions": next(iter(encoded.values()))}
    sizes = {name: np.shape(value)[0] if np.ndim(value) else None for name, value in outputs.items()}
    if len(set(sizes.values())) != 1 or None in sizes.values():
        raise ModelError(f"outputs have different batch sizes {sizes}; use the columnar 'inputs' format",
                         grpc.StatusCode.INVALID_ARGUMENT)
    rows = next(iter(sizes.values()))
    return {"predictions": [{name: value[row] for name, value in encoded.items()} for row in range(rows)]}
