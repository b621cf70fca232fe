"""The models `serve-local` serves, as TF Serving decides them: version
folders read as TF Serving reads them, a `model_version_policy` per model
(`latest` N, the default 1; `all`; `specific`), version labels, a
`--model_config_file` in `ModelServerConfig` text format, and reloads.

A version whose `batching_params.pbtxt` or warm-up records TF Serving would
refuse fails to load here too (checked with TF Serving's protos, whether or
not batching is asked for: stricter than TF Serving without
`--enable_per_model_batching_parameters`, on purpose).

A version that fails to load is logged and skipped: under `latest`, the
newest versions that load are served, so a broken new export leaves the one
before it serving.
"""

import dataclasses
import pathlib
import re
import sys
import threading

import grpc
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.config import model_server_config_pb2

from tl_keras.core.files import SAFE_NAME
from tl_keras.serving.session_bundle import SessionBundle
from tl_keras.serving.tf_serving_files import WARMUP_FILE, check_export


MAX_VERSION = 2**63 - 1


class ModelError(LookupError):
    """A request for a model, version or signature the server does not have,
    or with inputs the signature does not take. `status` is the gRPC code."""

    def __init__(self, message, status=grpc.StatusCode.NOT_FOUND):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class ServedModel:
    """One model: its base folder (holding `<version>/` SavedModels), its
    version policy and labels.

    Args:
        name: the model's name in requests.
        base_path: the folder of its version folders.
        policy: `"latest"`, `"all"` or `"specific"`.
        num_versions: how many versions `latest` serves.
        versions: the versions `specific` serves.
        labels: `{label: version}`.
    """

    name: str
    base_path: pathlib.Path
    policy: str = "latest"
    num_versions: int = 1
    versions: tuple = ()
    labels: dict = dataclasses.field(default_factory=dict)


def read_model_config(path):
    """The `ServedModel`s of a TF Serving `--model_config_file`
    (`ModelServerConfig` in protobuf text format); relative base paths are
    taken from the file's folder.

    Example:
    >>> read_model_config("models.config")
    [ServedModel(name='reviews', base_path=PosixPath('/models/reviews'), ...)]
    """
    path = pathlib.Path(path)
    try:
        config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
    except (OSError, text_format.ParseError) as error:
        raise ValueError(f"{path}: not a readable ModelServerConfig ({error}).") from None
    return models_from_config(config, path.parent)


def models_from_config(config, folder=pathlib.Path(".")):
    """`ServedModel`s from a `ModelServerConfig` proto."""
    models = []
    for entry in config.model_config_list.config:
        if not SAFE_NAME.fullmatch(entry.name):
            raise ValueError(f"model name {entry.name!r} is not a plain name")
        if any(model.name == entry.name for model in models):  # As TF Serving's ServerCore refuses it.
            raise ValueError(f"Illegal to list model {entry.name} multiple times in config list")
        policy = entry.model_version_policy.WhichOneof("policy_choice") or "latest"
        models.append(ServedModel(
            entry.name, (folder / entry.base_path).resolve(), policy,
            entry.model_version_policy.latest.num_versions or 1,
            tuple(entry.model_version_policy.specific.versions), dict(entry.version_labels)))
    return models


class ModelRepository:
    """The served models, loaded on first use.

    Args:
        base_path: a folder holding `<name>/<version>/` (every sub-folder a
            model, served with the `latest` 1 policy; new ones are found as
            they appear), or `None`.
        models: `ServedModel`s (from a config file) instead.
        version_labels: optional `{name: {label: version}}` for `base_path`.
    """

    def __init__(self, base_path=None, models=None, version_labels=None):
        import tensorflow_text  # noqa: F401  (registers the TF Text ops, as TF Serving links them)

        self.base_path = pathlib.Path(base_path) if base_path is not None else None
        if self.base_path is not None and not self.base_path.is_dir():
            raise ValueError(f"{self.base_path}: no such folder of exported models.")
        missing = [f"{model.name} ({model.base_path})" for model in models or () if not model.base_path.is_dir()]
        if missing:
            raise ValueError(f"base path of model {missing[0]} is not a folder; export the model there first.")
        self.version_labels = version_labels or {}
        self._models = {model.name: model for model in models or ()}
        self._loaded, self._broken, self._signatures = {}, {}, {}
        self._lock = threading.Lock()

    def reload(self, models):
        """Serves `models` from now on (TF Serving's
        `HandleReloadConfigRequest`); models left out are unloaded."""
        with self._lock:
            self._models = {model.name: model for model in models}
            self.base_path = None
            self._loaded = {key: value for key, value in self._loaded.items() if key[0] in self._models}
            self._signatures = {key: value for key, value in self._signatures.items() if key[0] in self._models}

    def names(self):
        if self.base_path is not None:
            return sorted(p.name for p in self.base_path.iterdir() if p.is_dir() and SAFE_NAME.fullmatch(p.name))
        return sorted(self._models)

    def model(self, name):
        """The `ServedModel` called `name`; `ModelError` NOT_FOUND otherwise."""
        if isinstance(name, str) and SAFE_NAME.fullmatch(name):
            if name in self._models:
                return self._models[name]
            if self.base_path is not None and (self.base_path / name).is_dir():
                labels = self.version_labels.get(name, {})
                return ServedModel(name, self.base_path / name, labels=labels)
        where = f" under {self.base_path}" if self.base_path is not None else ""
        raise ModelError(f"Servable not found for request: Latest({name}) (model {name!r} is not{where} served)")

    def version_folders(self, name):
        """`{version: folder}`: every all-digit folder name, as TF Serving
        reads them (`00000123` is version 123)."""
        folders = {}
        base = self.model(name).base_path
        if base.is_dir():
            for folder in base.iterdir():
                # TF Serving parses a version as an int64; a larger number is not a version.
                if (folder.is_dir() and folder.name.isdigit() and folder.name.isascii()
                        and int(folder.name) <= MAX_VERSION):
                    folders.setdefault(int(folder.name), folder)
        return dict(sorted(folders.items()))

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
            if key not in self._broken or self._broken[key][0] != stamp:
                try:
                    check_export(folder)  # A batching file TF Serving cannot parse fails the load there too.
                    loaded = SessionBundle(folder)  # As TF Serving loads it: a session over the graph.
                    replay_warmup(loaded, folder)
                    self._loaded[key] = loaded
                    # Read once here, not on every request that needs a method name.
                    self._signatures[key] = _signature_defs(folder)
                    self._broken.pop(key, None)
                    return self._loaded[key]
                except Exception as error:  # noqa: BLE001  (a broken folder must leave the server up)
                    self._broken[key] = (stamp, first_line(error))
                    print(f"serve-local: skipping {folder}: cannot load it ({self._broken[key][1]})",
                          file=sys.stderr, flush=True)
            raise ModelError(f"model {name!r} version {version} failed to load: {self._broken[key][1]}",
                             grpc.StatusCode.FAILED_PRECONDITION)

    def served_versions(self, name):
        """The versions the model's policy serves, newest first, among those
        that load."""
        model, folders = self.model(name), self.version_folders(name)
        if model.policy == "specific":
            candidates = [v for v in sorted(model.versions, reverse=True) if v in folders]
        else:
            candidates = sorted(folders, reverse=True)
        served = []
        for version in candidates:
            try:
                self._load(name, version, folders[version])
            except ModelError:
                continue
            served.append(version)
            if model.policy == "latest" and len(served) == model.num_versions:
                break
        return served

    def resolve(self, name, version=None, label=None):
        """`(version, loaded SavedModel)` for a request: the label's version,
        the given one, or the newest served; TF Serving's errors otherwise."""
        model = self.model(name)
        if label:
            if label not in model.labels:
                raise ModelError(f"Unrecognized servable version label: {label}", grpc.StatusCode.INVALID_ARGUMENT)
            version = model.labels[label]
        served = self.served_versions(name)
        if version is None:
            if not served:
                raise ModelError(f"Servable not found for request: Latest({name}) (no loadable version yet)")
            version = served[0]
        elif version not in served:
            raise ModelError(f"Servable not found for request: Specific({name}, {version}) "
                             f"(version {version} is not served; have {sorted(served)})")
        return version, self._loaded[(name, version)]  # Every served version is loaded.

    def statuses(self, name, version=None, label=None):
        """`[(version, error or None)]`: the served versions (or the one
        asked for) and those that failed to load."""
        if version is not None or label:
            return [(self.resolve(name, version, label)[0], None)]
        served = self.served_versions(name)
        failed = [v for v in self.version_folders(name) if self.broken(name, v) and v not in served]
        if not served and not failed:
            raise ModelError(f"Could not find any versions of model {name}")
        return [(v, None) for v in sorted(served)] + [(v, self.broken(name, v)) for v in failed]

    def signature_defs(self, name, version):
        """The `SignatureDefMap` as written in `saved_model.pb` (what TF
        Serving reports) of a version `resolve` returned, read when it was
        loaded."""
        return self._signatures[(name, version)]


def replay_warmup(loaded, folder):
    """Runs the version's warm-up requests (`assets.extra/
    tf_serving_warmup_requests`, `PredictLog`s) through their signatures
    once, as TF Serving does at load, so the first real request is not the
    one that traces and allocates. A failing request fails the load."""
    from tensorflow_serving.apis import prediction_log_pb2

    path = folder / WARMUP_FILE
    if not path.is_file():
        return 0
    count = 0
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.WhichOneof("log_type") != "predict_log":
            continue
        request = log.predict_log.request
        signature = loaded.signatures[request.model_spec.signature_name or "serving_default"]
        signature(**{name: tf.make_ndarray(proto) for name, proto in request.inputs.items()})
        count += 1
    return count


def _signature_defs(folder):
    """A version folder's `SignatureDefMap` from `saved_model.pb`, without
    the internal `__saved_model_init_op`."""
    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((folder / "saved_model.pb").read_bytes())
    signatures = get_model_metadata_pb2.SignatureDefMap()
    for key, value in proto.meta_graphs[0].signature_def.items():
        if not key.startswith("__"):
            signatures.signature_def[key].CopyFrom(value)
    return signatures


def first_line(error):
    """The line of an error that says what went wrong, without the graph
    trace: the first line, or for TensorFlow's "Graph execution error" the
    op's own message under its "Detected at node" trace."""
    message = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if lines[0].startswith("Graph execution error"):
        causes = [line for line in lines[1:] if not line.startswith(("File ", "Detected at node", "[[", "Graph "))]
        if causes:
            return re.sub(r"\s*(\[\[\{\{node .*|\[Op:.*)$", "", causes[-1]) or lines[0]
    return lines[0]
