"""SavedModels in TF Serving's layout, for any `tf.Module`: text, image and
retrieval exports all go through `export_module`.

Layout: `<base>/<name>/<version>/` with `saved_model.pb`, `variables/`,
`assets.extra/tf_serving_warmup_requests` and `model_card.json`, written into
a hidden staging folder and renamed into place, so a version folder is
complete or absent; the rename also claims the version number, so two
processes exporting at once get two versions. Modules track the models'
underlying variables (`raw_variables`), so each is stored once (Keras' own
`model.export` stores them twice).
"""

import errno
import os
import pathlib
import shutil
import uuid

import numpy as np
import tensorflow as tf

from tl_keras.core.files import check_name, write_json

WARMUP_FILE = "tf_serving_warmup_requests"


def raw_variables(*layers):
    """The underlying `tf.Variable`s of Keras layers or models, for a
    `tf.Module` to track: tracking the Keras objects themselves would save
    every variable twice, and the copies a TF1 session (TF Serving,
    saved_model_cli) restores would not be the ones the graph reads."""
    return [variable.value for layer in layers for variable in layer.weights]


class Untracked:
    """Holds an object out of `tf.Module`'s dependency tracking."""

    def __init__(self, value):
        self.value = value


class ServingModule(tf.Module):
    """The base of every serving graph, in the style of Keras'
    `ExportArchive`: `track` stores Keras layers' variables once and hands
    the layers back for the graph to call, `endpoint` adds a signature, and
    `write` saves the module in TF Serving's layout, atomically
    (`export_module`).

    Example:
    >>> module = ServingModule("text_serving")
    >>> model = module.track(classifier)
    >>> module.endpoint("serving_default", lambda text: {"p": model.value(tokens(text))},
    ...                 [tf.TensorSpec([None], tf.string, name="text")])
    >>> module.write("exports", "reviews", card={"task": "classification"})
    """

    def __init__(self, name):
        super().__init__(name=name)
        self.layer_variables = []
        self.endpoints = {}

    def track(self, *layers):
        """Keeps the raw variables of Keras `layers` (`raw_variables`: each
        stored once) and returns the first layer out of tracking, as
        `Untracked` (its `.value` is the layer)."""
        self.layer_variables.extend(raw_variables(*layers))
        return Untracked(layers[0])

    def endpoint(self, name, function, input_signature):
        """Adds the signature `name`: `function` traced with
        `input_signature`; returns the `tf.function`."""
        self.endpoints[name] = tf.function(function, input_signature=input_signature)
        return self.endpoints[name]

    def write(self, export_dir, model_name, version=None, warmup_requests=(), card=None, batching=False):
        """Saves the module with its endpoints as version `version` of
        `model_name` under `export_dir` (see `export_module`)."""
        return export_module(self, dict(self.endpoints), export_dir, model_name, version, warmup_requests, card,
                             batching)


def next_version(model_dir):
    """Returns one more than the highest integer version folder in
    `model_dir` (1 if there is none); other names are ignored."""
    model_dir = pathlib.Path(model_dir)
    versions = [int(p.name) for p in model_dir.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def _signature_card(function):
    concrete = function.get_concrete_function()
    inputs = tf.nest.flatten(concrete.structured_input_signature)

    def describe(spec):
        return {"dtype": spec.dtype.name, "shape": [-1 if d is None else d for d in spec.shape.as_list()]}

    return {
        "inputs": {spec.name: describe(spec) for spec in inputs},
        "outputs": {name: describe(spec) for name, spec in concrete.structured_outputs.items()},
    }


def write_warmup_requests(path, model_name, requests):
    """Writes TF Serving warm-up requests: a TFRecord of `PredictionLog`s,
    each a `serving_default` request with the inputs of one dict of
    `requests` (input name to a list or array)."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    with tf.io.TFRecordWriter(str(path)) as writer:
        for inputs in requests:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=model_name, signature_name="serving_default")
            )
            for name, value in inputs.items():
                request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())


# TF Serving's per-model batching (`--enable_per_model_batching_parameters`
# reads `batching_params.pbtxt` beside `saved_model.pb` as a
# `BatchingParameters` text proto: wrapped numbers are messages, the plain
# `bool` `pad_variable_length_inputs` is not; `tl_keras.serving.tf_serving_files`
# checks it with TF Serving's own protos), written only into exports whose every signature may be batched: requests
# are split into batches of at most 32 rows, any size is accepted, and
# variable-length dimensions are padded (token ids with 0, which the padding
# mask ignores).
BATCHING_FILE = "batching_params.pbtxt"
BATCHING_PARAMETERS = """max_batch_size { value: 1024 }
max_execution_batch_size { value: 32 }
enable_large_batch_splitting { value: true }
batch_timeout_micros { value: 1000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 2 }
pad_variable_length_inputs: true
"""


def export_module(module, signatures, export_dir, model_name, version=None, warmup_requests=(), card=None,
                  batching=False):
    """Saves a `tf.Module` as version `version` of `model_name` under
    `export_dir`, atomically: it is written to a hidden staging folder and
    renamed into place, so the version folder is complete or absent.

    Without `version`, the next free number is claimed by that rename: two
    processes exporting the same model at once get two versions (the loser
    of a race retries with the next number).

    Args:
        module: the `tf.Module` to save.
        signatures: signature name to `tf.function` (with an input
            signature); `serving_default` among them.
        export_dir: the base folder TF Serving watches.
        model_name: the model's folder name under `export_dir`.
        version: an integer version; the next free one if `None`.
        warmup_requests: dicts of `serving_default` inputs, written as TF
            Serving warm-up requests.
        card: JSON-ready facts for `model_card.json`; the signatures'
            input and output specs and the TF versions are added.
        batching: write `batching_params.pbtxt` beside `saved_model.pb`
            (TF Serving's per-model batching): only for models whose
            signatures batch safely.

    Returns:
        The version folder, a `pathlib.Path`.
    """
    check_name(model_name, "`model_name`")
    if version is not None and (not isinstance(version, (int, np.integer)) or isinstance(version, bool)
                                or version < 1):
        raise ValueError(f"`version` must be an integer >= 1, received {version!r}.")
    model_dir = pathlib.Path(export_dir) / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    if version is not None and (model_dir / str(version)).exists():
        raise FileExistsError(f"Version folder {model_dir / str(version)} already exists; versions are never "
                              "overwritten.")
    staging = model_dir / f".tmp-{uuid.uuid4().hex[:8]}"
    try:
        tf.saved_model.save(module, str(staging), signatures=signatures)
        if warmup_requests:
            (staging / "assets.extra").mkdir(exist_ok=True)
            write_warmup_requests(staging / "assets.extra" / WARMUP_FILE, model_name, list(warmup_requests))
        if batching:
            (staging / BATCHING_FILE).write_text(BATCHING_PARAMETERS)
        import tensorflow_text

        model_card = {
            "model_name": model_name,
            "tensorflow_version": tf.__version__,
            "tensorflow_text_version": tensorflow_text.__version__,
            "signatures": {name: _signature_card(function) for name, function in signatures.items()},
            "server_batching": bool(batching),
            **(card or {}),
        }
        return _claim_version(staging, model_dir, version, model_card)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _claim_version(staging, model_dir, version, model_card, attempts=100):
    """Renames `staging` to the version folder: `version`, or the next free
    number, retrying with the one after when another process claimed it
    first (renaming a folder onto a non-empty one fails atomically)."""
    for _ in range(attempts):
        number = next_version(model_dir) if version is None else version
        write_json(staging / "model_card.json", {**model_card, "version": int(number)})
        try:
            os.rename(staging, model_dir / str(number))
            return model_dir / str(number)
        except OSError as error:
            if error.errno not in (errno.EEXIST, errno.ENOTEMPTY) or version is not None:
                raise
    raise FileExistsError(f"{model_dir}: no free version number after {attempts} attempts.")
