"""Files that cannot lie or half-exist: checked folders and names, JSON that
is always valid, atomic writes, and verified array caches.

Every writer here writes a hidden temporary sibling and renames it into
place, so a reader sees the old file or the new one, never a half-written
one. Every cache file carries the key it was made for and a checksum of its
content; a file that fails either check is named in a warning, removed and
recomputed by the caller.
"""

import hashlib
import json
import math
import os
import pathlib
import re
import uuid
import warnings
import zipfile

import numpy as np

SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def check_name(name, what="model name"):
    """Returns `name` if it is a plain folder name (letters, digits, `_`,
    `.`, `-`; not starting with `.` or `-`, so never `.` or `..`); raises
    `ValueError` echoing it otherwise.

    Example:
    >>> check_name("reviews")
    'reviews'
    """
    if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
        raise ValueError(f"{what} must be a plain folder name (letters, digits, '_', '.', '-', not starting "
                         f"with '.' or '-'), received {name!r}.")
    return name


def writable_folder(path):
    """Creates `path` if needed and checks that files can be written in it,
    by writing and removing a probe file; raises `OSError` naming the
    folder otherwise. Returns the folder as a `pathlib.Path`.

    Example:
    >>> writable_folder("exports")
    PosixPath('exports')
    """
    folder = pathlib.Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-probe-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise OSError(error.errno, f"cannot write in {folder}: {error.strerror}") from None
    return folder


def finite_json(value):
    """`value` with every NaN or infinite float replaced by `None`, so that
    `json.dumps(..., allow_nan=False)` writes valid JSON."""
    if isinstance(value, dict):
        return {key: finite_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(item) for item in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.ndarray):
        return finite_json(value.tolist())
    return value


def write_atomically(path, data):
    """Writes `data` (bytes or str) to `path` through a temporary sibling
    renamed into place."""
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        temporary.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_json(path, value):
    """Writes `value` as indented JSON, atomically; NaN and infinities are
    written as `null` (JSON has no NaN)."""
    return write_atomically(path, json.dumps(finite_json(value), indent=2, default=str, allow_nan=False) + "\n")


def _checksum(key, arrays):
    digest = hashlib.blake2b(key.encode(), digest_size=16)
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def save_arrays(path, key, arrays):
    """Saves a dict of numpy arrays as a verified cache file: an `.npz`
    holding the arrays, the `key` they were made for and their checksum;
    written atomically."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}.npz")
    try:
        np.savez(temporary, **arrays, __key__=np.array(key), __checksum__=np.array(_checksum(key, arrays)))
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def load_arrays(path, key):
    """The arrays of a cache file written by `save_arrays` for `key`, or
    `None` if there is none. A file that cannot be read, was made for
    another key or fails its checksum is named in a warning and removed, and
    `None` is returned, so the caller recomputes it.

    Example:
    >>> arrays = load_arrays("runs/x/feature_cache/ab12.npz", "ab12")
    """
    path = pathlib.Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
        stored_key, checksum = str(arrays.pop("__key__")), str(arrays.pop("__checksum__"))
        if stored_key != key:
            problem = f"made for key {stored_key}, not {key}"
        elif checksum != _checksum(key, arrays):
            problem = "its content does not match its checksum"
        else:
            return arrays
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        problem = f"unreadable ({type(error).__name__}: {error})"
    warnings.warn(f"cache file {path}: {problem}; removed, recomputing.", stacklevel=2)
    path.unlink(missing_ok=True)
    return None
