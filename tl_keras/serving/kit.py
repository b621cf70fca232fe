"""The TF Serving kit's `models.config`, written from what an export folder
actually holds: TF Serving stops loading every model at the first base path
it cannot find (tensorflow/serving#1693), so a fixed list breaks serving."""

import json
import pathlib

from google.protobuf import text_encoding

from tl_keras.core.files import SAFE_NAME


def quoted(text):
    """`text` as a protobuf text-format string literal (quotes, backslashes
    and control characters escaped), so no value breaks out of its field."""
    return '"' + text_encoding.CEscape(str(text), as_utf8=True) + '"'


def exported_models(export_dir):
    """`{name: newest model card}` of the models under `export_dir` that have
    at least one complete version folder (`saved_model.pb`)."""
    if not pathlib.Path(export_dir).is_dir():
        raise ValueError(f"{export_dir} is not a folder of exported models.")
    models = {}
    for folder in sorted(pathlib.Path(export_dir).iterdir()):
        if not folder.is_dir() or not SAFE_NAME.fullmatch(folder.name):
            continue
        versions = sorted((int(v.name), v) for v in folder.iterdir()
                          if v.is_dir() and v.name.isdigit() and (v / "saved_model.pb").is_file())
        if versions:
            card = versions[-1][1] / "model_card.json"
            try:
                models[folder.name] = json.loads(card.read_text()) if card.is_file() else {}
            except (OSError, UnicodeDecodeError, ValueError) as error:
                raise ValueError(f"{card}: not a readable model card ({error}).") from None
            if not isinstance(models[folder.name], dict):
                raise ValueError(f"{card}: a model card is a JSON object, received "
                                 f"{type(models[folder.name]).__name__}.")
    return models


def serving_config(export_dir, base="/models"):
    """A `ModelServerConfig` (text format) serving every model exported
    under `export_dir` from `base/<name>` (the folder as TF Serving's
    container mounts it), newest version each.

    Example:
    >>> print(serving_config("exports"))
    model_config_list {
      config {
        name: "reviews"
    ...
    """
    models = exported_models(export_dir)
    if not models:
        raise ValueError(f"{export_dir} holds no exported model (no <name>/<version>/saved_model.pb).")
    where = " ".join(str(export_dir).split())  # A comment holds one line.
    lines = [f"# Written by `tl-keras serving-config {where}`: the models exported there, each served",
             f"# from {' '.join(base.split())}/<name> (newest version). Server-side batching: exports marked",
             "# server_batching carry batching_params.pbtxt (--enable_per_model_batching_parameters).",
             "model_config_list {"]
    for name, card in models.items():
        batching = "per-model batching" if card.get("server_batching") else "no server-side batching"
        lines += ["  config {", f"    name: {quoted(name)}", f"    base_path: {quoted(base.rstrip('/') + '/' + name)}",
                  '    model_platform: "tensorflow"', f"    # {card.get('task', 'model')}; {batching}",
                  "    model_version_policy { latest { num_versions: 1 } }", "  }"]
    return "\n".join(lines + ["}"]) + "\n"
