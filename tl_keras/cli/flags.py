"""Command-line flags for the recipes, from the fields of config dataclasses,
and the one-error-line rule for every command.

Every setting of a config and of its groups becomes a flag
(`head_learning_rate` → `--head-learning-rate`) whose help is the field's
metadata (`tl_keras.core.settings.setting`), with its default and, where the
field has a fixed set, its choices. Booleans take `--flag`/`--no-flag`
(and `--flag true|false`). A YAML file given with `--config` sets the same
names, converted to the fields' types (so `1e-3` is a float); flags override
it, which overrides the recipe's defaults.

`main_with_error_line(main)` runs a command so that an error ends it with one
`error: ...` line on stderr and exit status 2 (a bad value) or 1 (a runtime
failure); `--debug` shows the traceback.
"""

import argparse
import dataclasses
import pathlib
import sys
import traceback

import yaml

from tl_keras.core.choices import (ADAPTATION_METHODS, DISTRIBUTIONS, FUSIONS, HISTORY_POOLINGS, POOLINGS,
                                   PRECISIONS, TASKS, TEST_TIME_AUGMENTATIONS)
from tl_keras.core.settings import build_config, flat_fields

TRUE, FALSE = ("true", "1", "yes"), ("false", "0", "no")
# Settings with a fixed set of values, shown in --help and checked by argparse.
COMMON_CHOICES = {"task": TASKS, "distribute": DISTRIBUTIONS, "precision": PRECISIONS, "pooling": POOLINGS,
                  "method": ADAPTATION_METHODS, "export": FUSIONS, "history_pooling": HISTORY_POOLINGS,
                  "test_time_augmentation": TEST_TIME_AUGMENTATIONS}


def boolean(text):
    """`true`/`false` (also `1`/`0`, `yes`/`no`) as a bool."""
    if str(text).lower() not in TRUE + FALSE:
        raise argparse.ArgumentTypeError(f"expected true or false, received {text!r}")
    return str(text).lower() in TRUE


class _BooleanFlag(argparse.Action):
    # argparse's BooleanOptionalAction takes no value; this one also takes
    # `--flag false`, the form earlier versions of the recipes documented.
    def __init__(self, option_strings, dest, default=None, help=None, **unused):
        super().__init__(option_strings, dest, nargs="?", default=default, help=help, metavar="true|false")

    def __call__(self, parser, namespace, value, option):
        try:
            setattr(namespace, self.dest, True if value is None else boolean(value))
        except argparse.ArgumentTypeError as error:
            parser.error(f"argument {option}: {error}")


def _add_boolean_flag(parser, flag, dest, text):
    """`--flag [true|false]` and `--no-flag` (no value), both setting `dest`."""
    parser.add_argument(flag, dest=dest, action=_BooleanFlag, default=None, help=text)
    parser.add_argument("--no-" + flag[2:], dest=dest, action="store_false", default=None,
                        help=f"the same as {flag} false")


def _help(name, field):
    """A setting's help: the field's metadata, else its name."""
    return field.metadata.get("help") or name.replace("_", " ")


def _required(field, group):
    """A field of the config's own (not a group's) without a default."""
    return group is None and field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def _field_kind(field):
    kind = field.type if isinstance(field.type, type) else {"int": int, "float": float, "bool": bool}.get(field.type, str)
    return kind if kind in (int, float, bool) else str


def _convert(value, kind, where):
    """A YAML value as the field's type; names `where` if it does not fit."""
    try:
        if kind is bool:
            return value if isinstance(value, bool) else boolean(value)
        if kind is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if kind is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return value if value is None else str(value)
    except (ValueError, TypeError, argparse.ArgumentTypeError):
        raise ValueError(f"{where} must be {'an integer' if kind is int else 'a ' + kind.__name__}, "
                         f"received {value!r}.") from None


def add_config_flags(parser, config_type, defaults=None, help=None, choices=None):
    """Adds `--config`, `--debug` and a flag for every setting of
    `config_type` and its groups (`tl_keras.core.settings.flat_fields`) to
    `parser`; each flag's help is the field's, with its default
    (`defaults` over the config's) and its choices.

    Example:
    >>> add_config_flags(parser, TextClassificationConfig)
    """
    defaults, choices = dict(defaults or {}), {**COMMON_CHOICES, **(choices or {})}
    parser.add_argument("--config", help="YAML file of settings (the flags' names with underscores); flags override it")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    for name, (field, own_default, group) in flat_fields(config_type).items():
        kind = _field_kind(field)
        text = (help or {}).get(name) or _help(name, field)
        default = defaults.get(name, own_default)
        if "default" in text:  # The help says what the default is.
            pass
        elif _required(field, group) and name not in defaults:
            text += " (required)"
        elif default not in (None, "", dataclasses.MISSING):
            text += f" (default: {default})"
        flag = "--" + name.replace("_", "-")
        text = text.replace("%", "%%")  # argparse formats help with %.
        if kind is bool:
            _add_boolean_flag(parser, flag, name, text)
        else:
            parser.add_argument(flag, type=kind, default=None, help=text, choices=choices.get(name),
                                metavar=None if name in choices else name.upper())
    return parser


def settings_from(args, config_type, defaults=None, choices=None):
    """The flat settings dict from parsed `args`: `defaults`, then the
    `--config` YAML (converted to the fields' types), then the flags given."""
    fields = flat_fields(config_type)
    choices = {**COMMON_CHOICES, **(choices or {})}
    settings = dict(defaults or {})
    if args.config:
        path = pathlib.Path(args.config)
        loaded = read_settings_file(path)
        unknown = sorted(set(loaded) - set(fields))
        if unknown:
            raise ValueError(f"{path}: unknown settings {unknown}; known: {sorted(fields)}")
        for name, value in loaded.items():
            value = _convert(value, _field_kind(fields[name][0]), f"{path}: {name}")
            if name in choices and value not in choices[name]:
                raise ValueError(f"{path}: {name} must be one of {list(choices[name])}, received {value!r}.")
            settings[name] = value
    settings.update({k: v for k, v in vars(args).items() if v is not None and k in fields})
    return settings


MAX_SETTINGS_BYTES = 1024 * 1024


def read_settings_file(path):
    """A `--config` YAML file as a flat mapping of setting names to scalars,
    read with bounds: a regular file (not a FIFO or a device) of at most
    `MAX_SETTINGS_BYTES`, no anchors or aliases, no nested values; every
    refusal names the file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file of settings.")
    size = path.stat().st_size
    if size > MAX_SETTINGS_BYTES:
        raise ValueError(f"{path}: {size} bytes; a settings file holds at most {MAX_SETTINGS_BYTES}.")
    try:
        text = path.read_text(encoding="utf-8-sig")
        # Events first: aliases ("billion laughs") and nesting are refused
        # before anything is built.
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise ValueError(f"{path}: anchors and aliases are not allowed in a settings file.")
            depth += isinstance(event, yaml.CollectionStartEvent) - isinstance(event, yaml.CollectionEndEvent)
            if depth > 1:
                raise ValueError(f"{path}: settings are single values, not nested lists or mappings "
                                 f"(line {event.start_mark.line + 1}).")
        loaded = yaml.safe_load(text) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: cannot read the settings: {str(error).splitlines()[0]}") from None
    except ValueError as error:  # Such as a 5,000-digit integer.
        message = str(error).split("; use sys.set_int_max_str_digits")[0]
        raise ValueError(message if message.startswith(str(path)) else
                         f"{path}: cannot read the settings: {message}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"{path}: expected a mapping of settings, received {type(loaded).__name__}.")
    return loaded


def check_required(settings, config_type):
    """Raises `ValueError` naming the flags of required settings (no
    default) that `settings` leaves unset."""
    missing = [name for name, (field, _, group) in flat_fields(config_type).items()
               if _required(field, group) and settings.get(name) is None]
    if missing:
        raise ValueError(f"missing required setting(s): {', '.join('--' + m.replace('_', '-') for m in missing)}")


def parse_flags(description, config_type, argv=None, defaults=None, help=None, choices=None, prog=None):
    """Returns the flat settings dict for `config_type` from defaults,
    `--config` YAML and flags, in that order of precedence (lowest first).
    Required settings may still be unset (see `check_required`).

    Args:
        description: the command's `--help` text.
        config_type: the config dataclass whose settings (and its groups')
            become flags.
        argv: the arguments (`sys.argv[1:]` if `None`).
        defaults: the recipe's own defaults, over the config's.
        help: `{setting: text}` replacing the field's help.
        choices: `{setting: allowed values}`, checked and shown in `--help`.
        prog: the command's name in usage lines.

    Example:
    >>> settings = parse_flags(__doc__, TextClassificationConfig, ["--epochs", "3"])
    """
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_flags(parser, config_type, defaults, help, choices)
    return settings_from(parser.parse_args(argv), config_type, defaults, choices)


def build(config_type, settings):
    """Makes a `config_type` (with its groups) from flat settings; a
    required one left unset is an error naming its flag."""
    check_required(settings, config_type)
    return build_config(config_type, settings)


def main_with_error_line(main, argv=None):
    """Runs `main(argv)` and returns its exit status; an exception ends it
    with one `error: ...` line on stderr, unless `--debug` is among the
    arguments, which shows the traceback. The status says whose the error
    is: 2 for a bad value given (`ValueError`, `LookupError`: flags, settings,
    data), as for argparse's usage errors; 1 for what failed at run time (a
    refused connection, a server's answer, a file that cannot be read or
    written) and for an unexpected kind of error.

    Example:
    >>> sys.exit(main_with_error_line(main))
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    try:
        return main([arg for arg in argv if arg != "--debug"]) or 0
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001  (the one place errors become a line)
        if debug:
            traceback.print_exc()
        expected = isinstance(error, (ValueError, OSError, LookupError, RuntimeError))
        usage = isinstance(error, (ValueError, LookupError))
        message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        if not expected:
            message = f"{type(error).__name__}: {message}"
        print(f"error: {message.strip().splitlines()[0] if message.strip() else type(error).__name__}"
              f"{'' if expected or debug else ' (run with --debug for the traceback)'}",
              file=sys.stderr)
        return 2 if usage else 1
