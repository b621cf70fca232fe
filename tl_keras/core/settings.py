"""Settings dataclasses with their help in each field's metadata, nested in
shared groups, and flattened to one namespace of names (the command line's
flags and `--config` YAML keys) and built back.

A workflow's config holds its own fields and groups (`training`, `splits`,
`output`, `runtime`): dataclass fields whose default is a group instance.
Every name is unique across a config and its groups, so `--epochs` or
`epochs:` needs no group prefix. A config lists the group fields it cannot
apply in `unused_settings`; those get no flag, and a value other than the
group's default is refused, naming it, instead of ignored.

No TensorFlow import: the command line describes and checks settings with it.
"""

import dataclasses
import inspect
import textwrap


def setting(default=dataclasses.MISSING, help="", factory=dataclasses.MISSING):
    """A dataclass field whose help text is kept in `metadata["help"]`
    (`documented` writes the docstring's `Args:` from it, the command line
    its `--help`).

    Example:
    >>> epochs: int = setting(3, "epochs of the strategy's main phase.")
    """
    return dataclasses.field(default=default, default_factory=factory, metadata={"help": help})


def documented(config_type):
    """Class decorator (over `@dataclasses.dataclass`): the docstring's
    `Args:` section, written from the fields' help, goes between its summary
    and its `Example:`, so the docstring and `--help` say the same."""
    doc = inspect.cleandoc(config_type.__doc__ or "")
    summary, _, example = doc.partition("\nExample:")
    entries = [textwrap.fill(f"{field.name}: {field.metadata.get('help', '')}", 79, initial_indent="    ",
                             subsequent_indent="        ") for field in dataclasses.fields(config_type)]
    config_type.__doc__ = (summary.rstrip() + "\n\nArgs:\n" + "\n".join(entries)
                           + (f"\n\nExample:{example}" if example else ""))
    return config_type


def group_default(field):
    """The group instance a field defaults to, or `None` for a plain field."""
    if field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
        return value if dataclasses.is_dataclass(value) else None
    return None


def flat_fields(config_type):
    """`{name: (field, default, group name or None)}` for a config and its
    groups' fields, leaving out the config's `unused_settings`; a name in
    two places is an error (a programming one: the flags would clash)."""
    flat = {}
    unused = set(getattr(config_type, "unused_settings", ()))
    for field in dataclasses.fields(config_type):
        group = group_default(field)
        members = ([(field, field.default, None)] if group is None else
                   [(inner, getattr(group, inner.name), field.name) for inner in dataclasses.fields(group)])
        for inner, default, group_name in members:
            if inner.name in unused:
                continue
            if inner.name in flat:
                raise TypeError(f"{config_type.__name__}: setting {inner.name!r} is in two groups.")
            flat[inner.name] = (inner, default, group_name)
    return flat


def build_config(config_type, settings=None, **more):
    """A `config_type` from flat settings (`settings` and `more`: names of
    its own and its groups' fields; others are skipped): each group starts
    from the value given for it by its own name (a group instance), else
    from the config's default for it. Unknown names are left out, so one
    settings dict can build several configs.

    Example:
    >>> config = build_config(TextClassificationConfig, train="a.tsv", backbone=b, output_dir="runs",
    ...                       epochs=2, export_dir="exports")
    >>> config.training.epochs, config.output.export_dir
    (2, 'exports')
    """
    settings = {**(settings or {}), **more}
    unused = set(getattr(config_type, "unused_settings", ()))
    own, groups = {}, {}
    for field in dataclasses.fields(config_type):
        group = group_default(field)
        if group is None:
            if field.name in settings:
                own[field.name] = settings[field.name]
            continue
        group = settings.get(field.name, group)
        given = {inner.name: settings[inner.name] for inner in dataclasses.fields(group)
                 if inner.name in settings and inner.name not in unused}
        groups[field.name] = dataclasses.replace(group, **given) if given else group
    return config_type(**own, **groups)


def refuse_unused(config):
    """Raises `ValueError` naming every group setting of `config` that its
    workflow cannot apply (`unused_settings`) and that differs from the
    group's default: such a value is refused, never ignored."""
    unused = set(getattr(type(config), "unused_settings", ()))
    changed = []
    for field in dataclasses.fields(config):
        default, value = group_default(field), getattr(config, field.name)
        if default is None or not dataclasses.is_dataclass(value):
            continue
        changed += [f"{name}={getattr(value, name)!r}" for name in sorted(unused)
                    if hasattr(value, name) and getattr(value, name) != getattr(default, name)]
    if changed:
        raise ValueError(f"{type(config).__name__} cannot apply {', '.join(changed)}; leave "
                         f"{'it' if len(changed) == 1 else 'them'} unset.")


def flatten(config):
    """A config and its groups as one flat `{name: value}` dict."""
    flat = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        flat.update(dataclasses.asdict(value) if dataclasses.is_dataclass(value) else {field.name: value})
    return flat
