"""Settings as typed values: the one YAML reader, and the check of a value against a dataclass field's type.

A `--set key=value`, a flow parameter and a YAML/JSON file all end here: the text is read once (YAML), checked
against the field's annotation (`int`, `float | None`, `Literal[...]`, `list[str]`, a nested config), and the
configuration is rebuilt with `dataclasses.replace`, so its `__post_init__` checks run again. No value goes back to
text on its way.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal


class SettingError(ValueError):
    """A setting names no field, or its value does not fit the field's type; the message says which and what fits.
    `yaml_error`: the YAML error when the text itself could not be read (the CLI words it as a usage error)."""

    yaml_error: Exception | None = None


def read_yaml(text: str, source: str) -> Any:
    """The one YAML reader (config files, `--set` values). YAML 1.1 reads `1e-5` (no dot) as text: `typed` fixes
    that where a number is expected."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        error = SettingError(f"{source}: not valid YAML ({str(e).splitlines()[0]})")
        error.yaml_error = e
        raise error from None


def read_file(path: str | Path) -> dict[str, Any]:
    """A mapping of settings from a .yaml/.yml or .json file (JSON is YAML)."""
    path = Path(path)
    data = read_yaml(path.read_text(), str(path)) or {}
    if not isinstance(data, dict):
        raise SettingError(f"{path}: expected a mapping of settings")
    return data


def split_pair(pair: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], the value read as YAML)."""
    key, sep, text = pair.partition("=")
    if not sep or not key:
        raise SettingError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set lr=1e-3 or --set arch.d_model=64")
    return key.split("."), read_yaml(text, f"--set {pair!r}: the value")


def field_hint(config: Any, name: str, shown: str) -> Any:
    """The annotation of `config`'s field `name`; an unknown name is refused with the known ones."""
    if not dataclasses.is_dataclass(config):
        raise SettingError(f"{shown}: {name!r} goes inside a setting that has no sub-settings")
    names = [f.name for f in dataclasses.fields(config)]
    if name not in names:
        raise SettingError(f"{shown}: unknown setting {name!r}; known: {', '.join(names)}")
    return typing.get_type_hints(config if isinstance(config, type) else type(config))[name]


def typed(value: Any, hint: Any, key: str, shown: str) -> Any:
    """`value` as the field's type (1e-3 read as text becomes a number; lists stay lists: the dataclass turns
    them into its tuples), or a SettingError naming what fits."""
    if isinstance(value, str) and not fits(value, hint) and fits(1.0, hint):
        try:
            value = float(value)
        except ValueError:
            pass
    if not fits(value, hint):
        raise SettingError(f"{shown}: {key} must be {describe(hint)}, not {value!r}")
    return value


def fits(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if origin is Literal:
        return value in args
    if origin in (typing.Union, types.UnionType):
        return any(fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, Sequence):
        item = args[0] if args else Any
        return isinstance(value, (list, tuple)) and all(fits(v, item) for v in value)
    if origin is dict:
        k, v = args or (Any, Any)
        return isinstance(value, dict) and all(fits(a, k) and fits(b, v) for a, b in value.items())
    if dataclasses.is_dataclass(hint):
        return isinstance(value, dict)
    return True


def describe(hint: Any) -> str:
    names = {int: "an integer", float: "a number", str: "text", bool: "true or false", type(None): "null"}
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(str(a) for a in typing.get_args(hint))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in typing.get_args(hint))
    return names.get(hint, str(hint).replace("typing.", ""))


def check_choices(config: Any) -> None:
    """Every `Literal[...]` field of a dataclass holds one of its choices (ValueError naming the field)."""
    for name, hint in typing.get_type_hints(type(config)).items():
        options = [typing.get_args(a) for a in (hint, *typing.get_args(hint)) if typing.get_origin(a) is Literal]
        value = getattr(config, name)
        if options and not any(value in o for o in options) and not (value is None and fits(None, hint)):
            raise ValueError(f"{name} must be one of {', '.join(map(str, options[0]))}, not {value!r}")
