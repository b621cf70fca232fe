"""A run's claim on its output folder, and the fingerprint its backups keep.

- `RunFolder` takes an exclusive lock on the output folder while a run is
  live (a second run on the same folder stops at once, naming it) and checks,
  before anything trains, that the export folder can be written and the model
  name is a plain name, so no trained model is lost to a late error.
- `run_fingerprint` describes everything that shapes the trained weights (the
  data files' content hashes, backbone, strategy, every hyperparameter);
  `check_backups` keeps it beside the per-epoch backups, and a restart whose
  fingerprint differs stops naming what changed, unless asked to start afresh.
- `keep_trained_model` guards every step after training (scoring, reports,
  preset, export): if one fails, the trained weights are saved first and
  the error names the file.
"""

import contextlib
import dataclasses
import errno
import fcntl
import functools
import hashlib
import json
import os
import pathlib
import shutil

from tl_keras.core.files import check_name, writable_folder, write_json
from tl_keras.training.distribution import is_chief, worker_name

# Settings that do not change the trained weights, left out of fingerprints.
NOT_FINGERPRINTED = {"output_dir", "export_dir", "model_name", "verbose", "resume", "fresh", "backup_dir"}
FINGERPRINT_FILE = "run.json"


class RunConflict(ValueError):
    """Another live run holds the folder, or backups were made by a run with
    other settings."""


class TrainedModelKept(RuntimeError):
    """A step after training failed; the trained weights were saved first
    (the message names the file)."""


@contextlib.contextmanager
def keep_trained_model(model, output_dir, step):
    """Runs the block; if it fails, the trained `model`'s weights are saved
    to `output_dir/model.weights.h5` first and the error names that file,
    so a late error never throws a trained model away. Nested guards save
    once (the innermost), and a `None` model (a run whose product is a
    preset already written) or a worker other than the chief only re-raises.

    Args:
        model: the trained Keras model or task, or `None`.
        output_dir: the run's folder.
        step: what the block does, for the message (`"export"`).

    Example:
    >>> with keep_trained_model(classifier, "runs/reviews", "scoring the test split"):
    ...     metrics = classifier.evaluate_report(test_x, test_y)
    """
    try:
        yield
    except TrainedModelKept:
        raise
    except Exception as error:
        if model is None or not is_chief():
            raise
        kept = pathlib.Path(output_dir) / "model.weights.h5"
        cause = (str(error).strip() or type(error).__name__).splitlines()[0]  # One line: the path must show.
        try:
            kept.parent.mkdir(parents=True, exist_ok=True)
            model.save_weights(str(kept))
        except Exception as save_error:  # noqa: BLE001  (the step's error is the one to report)
            raise TrainedModelKept(f"{step} failed ({cause}), and saving the trained weights to {kept} failed "
                                   f"too ({save_error}).") from error
        raise TrainedModelKept(f"{step} failed ({cause}); the trained weights are kept in {kept} "
                               "(`model.load_weights`).") from error


def _hash_path(path):
    digest = hashlib.blake2b(digest_size=16)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path) if file != path else file.name).encode() + b"\0")
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def run_fingerprint(config):
    """A JSON-ready dict of every setting of `config` (a dataclass, nested
    configs included) that shapes the weights, with each data file or
    folder it names replaced by its path and a hash of its content.

    Example:
    >>> run_fingerprint(TextClassificationConfig(train="a.tsv", backbone="b", output_dir="r"))["train"]
    {'path': 'a.tsv', 'content': '5f0c...'}
    """
    fingerprint = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name in NOT_FINGERPRINTED:
            continue
        if dataclasses.is_dataclass(value):
            fingerprint[field.name] = run_fingerprint(value)
        elif isinstance(value, (str, os.PathLike)) and str(value) and pathlib.Path(value).exists():
            fingerprint[field.name] = {"path": str(value), "content": _hash_path(pathlib.Path(value))}
        else:
            fingerprint[field.name] = value if isinstance(value, (int, float, bool, type(None))) else str(value)
    return fingerprint


def _differences(old, new, prefix=""):
    changed = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if isinstance(before, dict) and isinstance(after, dict) and "content" not in after:
            changed += _differences(before, after, f"{prefix}{key}.")
        elif before != after:
            changed.append(f"{prefix}{key}: {_shown(before)} -> {_shown(after)}")
    return changed


def _shown(value):
    if isinstance(value, dict) and "content" in value:
        return f"{value['path']} (content {value['content'][:8]})"
    return repr(value)


def check_backups(backup_root, fingerprint, fresh=False):
    """Keeps `fingerprint` in `backup_root/run.json`. If unfinished backups
    of a run with another fingerprint are there, raises `RunConflict` naming every
    setting that changed, or, when `fresh`, removes them so the run starts
    from scratch.

    Example:
    >>> check_backups("runs/x/backup", run_fingerprint(config))
    """
    backup_root = pathlib.Path(backup_root)
    stored_file = backup_root / FINGERPRINT_FILE
    if any(path.is_file() and path.name != FINGERPRINT_FILE for path in backup_root.rglob("*")):
        try:
            stored = json.loads(stored_file.read_text())
        except (OSError, ValueError):
            stored = None
        if stored != fingerprint:
            if not fresh:
                changed = _differences(stored, fingerprint) if isinstance(stored, dict) else [
                    f"{stored_file} is missing or unreadable"]
                raise RunConflict(
                    f"{backup_root} holds backups of a run with other settings ({'; '.join(changed)}); resuming "
                    "them would mix two runs. Pass --fresh to discard them and start again, or choose another "
                    "--output-dir.")
            shutil.rmtree(backup_root)
    backup_root.mkdir(parents=True, exist_ok=True)
    write_json(stored_file, fingerprint)


class RunFolder:
    """Holds an exclusive lock on `output_dir` for a live run and checks the
    export target before any training.

    Args:
        output_dir: the run's folder (created if needed).
        export_dir: the export base folder, or `None` for no export.
        model_name: the export's model name (a plain folder name).
        owner: names the lock, so each worker of one job has its own.

    Example:
    >>> with RunFolder("runs/reviews", "exports", "reviews"):
    ...     train_and_export()
    """

    def __init__(self, output_dir, export_dir=None, model_name=None, owner="chief"):
        self.output_dir = pathlib.Path(output_dir)
        self.export_dir = export_dir
        self.model_name = model_name
        self.owner = owner
        self._handle = None

    def __enter__(self):
        if self.export_dir:
            check_name(self.model_name, "`model_name`")
            if self.owner == "chief":
                model_dir = pathlib.Path(self.export_dir) / self.model_name
                writable_folder(model_dir if model_dir.exists() else self.export_dir)
        writable_folder(self.output_dir)
        lock = self.output_dir / f".lock-{self.owner}"
        self._handle = open(lock, "a+")
        try:
            fcntl.flock(self._handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            self._handle.seek(0)
            holder = self._handle.read().strip() or "another process"
            self._handle.close()
            self._handle = None
            if error.errno in (errno.EAGAIN, errno.EACCES):
                raise RunConflict(f"{self.output_dir} is in use by a live run ({holder}); wait for it or "
                                  "choose another --output-dir.") from None
            raise
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.write(f"pid {os.getpid()}\n")
        self._handle.flush()
        return self

    def __exit__(self, *exc):
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def holding_run_folder(run):
    """Decorates a workflow's `run(config, ...)` to hold a `RunFolder` on
    `config.output_dir` (and check `config.output.export_dir` and
    `model_name`) for
    the whole run."""

    @functools.wraps(run)
    def holding(config, *args, **kwargs):
        output = getattr(config, "output", None)  # The config's `OutputConfig` group, if it exports.
        folder = RunFolder(config.output_dir, getattr(output, "export_dir", None), getattr(output, "model_name", None),
                           worker_name())
        with folder:
            return run(config, *args, **kwargs)

    return holding
