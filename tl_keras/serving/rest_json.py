"""TF Serving's REST JSON values: bytes as `{"b64": ...}`, strings, numbers;
shared by the REST client and `serve-local`."""

import base64

import numpy as np


def holds_text(values):
    """True if a (nested) list of JSON values holds strings or bytes."""
    while isinstance(values, list) and values:
        values = values[0]
    return isinstance(values, (str, bytes))


def to_json_values(values):
    """Nested lists (or arrays) for TF Serving's REST API: bytes become
    `{"b64": ...}` objects."""
    if isinstance(values, (list, tuple, np.ndarray)):
        return [to_json_values(v) for v in values]
    if isinstance(values, bytes):
        return {"b64": base64.b64encode(values).decode("ascii")}
    return values.item() if isinstance(values, np.generic) else values


def from_json_values(values):
    """The inverse of `to_json_values`: `{"b64": ...}` objects become bytes."""
    if isinstance(values, list):
        return [from_json_values(v) for v in values]
    if isinstance(values, dict) and set(values) == {"b64"}:
        return base64.b64decode(values["b64"])
    return values
