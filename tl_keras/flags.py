"""Command-line flags for the recipes, from the fields of config dataclasses.

Every field becomes a flag (`learning_rate` → `--learning-rate`); a YAML file
given with `--config` sets the same names, and flags override it, which
overrides the recipe's defaults.
"""

import argparse
import dataclasses
import pathlib

import yaml


def _boolean(text):
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise argparse.ArgumentTypeError(f"expected true or false, received {text!r}")
    return text.lower() in ("true", "1", "yes")


def _fields(config_types):
    return {f.name: f for kind in config_types for f in dataclasses.fields(kind) if f.name != "training"}


def parse_flags(description, config_types, argv=None, defaults=None, help=None):
    """Returns the settings dict for `config_types` from defaults, `--config`
    YAML and flags, in that order of precedence (lowest first).

    Example:
    >>> settings = parse_flags(__doc__, [TextClassificationConfig, TrainingConfig],
    ...                        ["--epochs", "3"])
    """
    fields = _fields(config_types)
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file of settings; flags override it")
    for name, field in fields.items():
        kind = _boolean if field.type is bool else field.type if field.type in (int, float) else str
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=(help or {}).get(name))
    args = parser.parse_args(argv)
    settings = dict(defaults or {})
    if args.config:
        loaded = yaml.safe_load(pathlib.Path(args.config).read_text()) or {}
        unknown = sorted(set(loaded) - set(fields))
        if unknown:
            raise SystemExit(f"{args.config}: unknown settings {unknown}")
        settings.update(loaded)
    settings.update({k: v for k, v in vars(args).items() if v is not None and k != "config"})
    return settings


def build(config_type, settings, **extra):
    """Makes a `config_type` from the settings it has fields for."""
    names = {f.name for f in dataclasses.fields(config_type)}
    return config_type(**{k: v for k, v in settings.items() if k in names}, **extra)
