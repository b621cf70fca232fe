"""The files tl_keras writes for TF Serving, checked as TF Serving's own
loaders read them: text-format protos parsed with TF Serving's `.proto`
files (vendored in `tf_serving_protos/`, see its `SOURCE.md`), plus the rules
TF Serving applies after parsing (the batching sizes, the warm-up records).

- `batching_params.pbtxt` (per export) and `--batching_parameters_file`:
  `tensorflow.serving.BatchingParameters` (`ParseProtoTextFile`);
- `--model_config_file`: `tensorflow.serving.ModelServerConfig`;
- `--monitoring_config_file`: `tensorflow.serving.MonitoringConfig`;
- `assets.extra/tf_serving_warmup_requests`: a TFRecord file of at most
  1,000 `PredictionLog`s of a kind TF Serving replays.

Example:
>>> check_export("exports/reviews/3")   # raises `ServingFileError` naming the file
>>> parse_text_proto("models", open("export/models.config").read(), "models.config")
"""

import functools
import pathlib
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

PROTO_ROOT = pathlib.Path(__file__).parent / "tf_serving_protos"
MESSAGES = {
    "batching": "tensorflow.serving.BatchingParameters",
    "models": "tensorflow.serving.ModelServerConfig",
    "monitoring": "tensorflow.serving.MonitoringConfig",
}
PROTO_FILES = ("tensorflow_serving/config/model_server_config.proto",
               "tensorflow_serving/config/monitoring_config.proto",
               "tensorflow_serving/servables/tensorflow/session_bundle_config.proto")
BATCHING_FILE = "batching_params.pbtxt"
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
MAX_WARMUP_RECORDS = 1000  # WarmupConsts::kMaxNumRecords.
WARMUP_KINDS = ("regress_log", "classify_log", "predict_log", "multi_inference_log")  # What RunWarmupRequest replays.


class ServingFileError(ValueError):
    """A file TF Serving would refuse; the message names the file."""


def _add_with_dependencies(file_descriptor, files, seen):
    if file_descriptor.name in seen:
        return
    seen.add(file_descriptor.name)
    for dependency in file_descriptor.dependencies:
        _add_with_dependencies(dependency, files, seen)
    proto = descriptor_pb2.FileDescriptorProto()
    file_descriptor.CopyToProto(proto)
    files.file.append(proto)


@functools.cache
def _pool():
    """A descriptor pool of the vendored protos, compiled once a process."""
    # TensorFlow's `config.proto` and its imports are many files; TensorFlow's
    # own compiled descriptors stand in for them, as protoc's `--descriptor_set_in`.
    from tensorflow.core.protobuf import config_pb2, named_tensor_pb2
    from google.protobuf import any_pb2, wrappers_pb2

    dependencies, seen = descriptor_pb2.FileDescriptorSet(), set()
    for module in (any_pb2, wrappers_pb2, config_pb2, named_tensor_pb2):
        _add_with_dependencies(module.DESCRIPTOR, dependencies, seen)
    with tempfile.TemporaryDirectory() as folder:
        given, compiled = pathlib.Path(folder) / "dependencies.pb", pathlib.Path(folder) / "compiled.pb"
        given.write_bytes(dependencies.SerializeToString())
        # protoc in a child process: grpc_tools' protoc writes its errors to the C++ stderr.
        result = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"--proto_path={PROTO_ROOT}", f"--descriptor_set_in={given}",
             "--include_imports", f"--descriptor_set_out={compiled}", *PROTO_FILES],
            capture_output=True, text=True)
        if result.returncode:
            raise RuntimeError(f"protoc could not compile TF Serving's protos: {result.stderr.strip()}")
        files = descriptor_pb2.FileDescriptorSet.FromString(compiled.read_bytes())
    pool = descriptor_pool.DescriptorPool()
    for proto in files.file:
        pool.Add(proto)
    return pool


def message_class(kind):
    """The message class TF Serving parses a file of `kind` into (a key of
    `MESSAGES`), built from the vendored protos."""
    if kind not in MESSAGES:
        raise ValueError(f"`kind` must be one of {sorted(MESSAGES)}, received {kind!r}.")
    return message_factory.GetMessageClass(_pool().FindMessageTypeByName(MESSAGES[kind]))


def parse_text_proto(kind, text, origin):
    """Parses `text` as TF Serving parses the file `origin` of `kind`
    (`ParseProtoTextFile`: unknown fields and wrong types refused).

    Returns:
        The parsed message.

    Raises:
        ServingFileError: naming `origin`, the line and column, and the
            parser's reason.
    """
    message = message_class(kind)()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as error:
        raise ServingFileError(f"{origin}:{error} (TF Serving would refuse this "
                               f"{MESSAGES[kind].rsplit('.', 1)[-1]} file).") from None
    if kind == "batching":
        check_batching(message, origin)
    return message


def check_batching(parameters, origin):
    """The checks TF Serving's `WrapSessionForBatching` makes after parsing."""
    allowed = list(parameters.allowed_batch_sizes)
    max_batch_size = parameters.max_batch_size.value if parameters.HasField("max_batch_size") else 1000
    if allowed and allowed[-1] != max_batch_size:
        raise ServingFileError(f"{origin}: the last entry of allowed_batch_sizes must match max_batch_size; "
                               f"last entry was {allowed[-1]}, expected {max_batch_size}.")
    if parameters.HasField("max_execution_batch_size") and not parameters.enable_large_batch_splitting.value:
        raise ServingFileError(f"{origin}: max_execution_batch_size needs enable_large_batch_splitting: true.")


def check_warmup(path):
    """The warm-up file as TF Serving replays it: `PredictionLog` records of a
    replayable kind, at most `MAX_WARMUP_RECORDS`. Returns the record count."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    count = 0
    try:
        for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
            count += 1
            log = prediction_log_pb2.PredictionLog.FromString(record)
            if log.WhichOneof("log_type") not in WARMUP_KINDS:
                raise ServingFileError(f"{path}: record {count} has log_type {log.WhichOneof('log_type')!r}; "
                                       f"TF Serving replays only {', '.join(WARMUP_KINDS)}.")
    except (tf.errors.DataLossError, ValueError) as error:
        if isinstance(error, ServingFileError):
            raise
        raise ServingFileError(f"{path}: record {count + 1} is not a PredictionLog ({error}).") from None
    if count > MAX_WARMUP_RECORDS:
        raise ServingFileError(f"{path}: {count} warm-up records; TF Serving takes at most {MAX_WARMUP_RECORDS}.")
    return count


def check_export(version_dir):
    """Checks the TF Serving files of one exported version folder (its
    batching file and warm-up records, when present).

    Returns:
        The parsed `BatchingParameters`, or `None` when the export has none.
    """
    version_dir = pathlib.Path(version_dir)
    if (version_dir / WARMUP_FILE).is_file():
        check_warmup(version_dir / WARMUP_FILE)
    batching = version_dir / BATCHING_FILE
    if not batching.is_file():
        return None
    return parse_text_proto("batching", batching.read_text(), str(batching))


def check_kit(folder):
    """Checks a TF Serving kit folder's `models.config`,
    `monitoring.config` and `batching_parameters.txt`, where present.

    Returns:
        The names of the files checked.
    """
    folder, checked = pathlib.Path(folder), []
    for name, kind in (("models.config", "models"), ("monitoring.config", "monitoring"),
                       ("batching_parameters.txt", "batching")):
        if (folder / name).is_file():
            parse_text_proto(kind, (folder / name).read_text(), str(folder / name))
            checked.append(name)
    return checked


def main(argv=None):
    """`python -m tl_keras.serving.tf_serving_files PATH...`: checks kit
    folders (their config files) and export folders (every
    `<name>/<version>/`) as TF Serving's loaders would; exit 1 naming the
    first file it would refuse."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tl_keras.serving.tf_serving_files", description=main.__doc__)
    parser.add_argument("paths", nargs="+", help="kit folders (models.config, ...) or export base folders")
    paths = [pathlib.Path(path) for path in parser.parse_args(argv).paths]
    missing = [str(path) for path in paths if not path.is_dir()]
    if missing:
        parser.error(f"not a folder: {', '.join(missing)}")
    try:
        for path in paths:
            for name in check_kit(path):
                print(f"ok  {path / name}")
            for saved_model in sorted(path.glob("*/*/saved_model.pb")):
                batching = check_export(saved_model.parent)
                print(f"ok  {saved_model.parent}" + ("" if batching is None else f" (with {BATCHING_FILE})"))
    except ServingFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
