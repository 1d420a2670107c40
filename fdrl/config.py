"""Typed hyperparameters: dataclasses whose defaults are the paper's values (DESIGN.md sec. 3),
set from YAML files or `KEY=VALUE` strings (the command line, the workflow config)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from typing import TypeVar

from fdrl.errors import FdrlError

T = TypeVar("T")


def coerce(value: object, kind: object) -> object:
    """`value` (as YAML reads it) as the field type `kind`; ValueError if it is not one.

    Numeric strings are numbers (PyYAML reads `1e-4` as a string), and a comma-joined string is
    a tuple (`lr_milestones=800,900` on the command line).
    """
    args = typing.get_args(kind)
    if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:
        if value is None:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return coerce(value, kind)
    if typing.get_origin(kind) is tuple:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or (args[-1] is not Ellipsis and len(value) != len(args)):
            raise ValueError
        return tuple(coerce(v, args[0]) for v in value)
    if kind is bool:
        if not isinstance(value, bool):
            raise ValueError
        return value
    if isinstance(value, bool) or value is None:
        raise ValueError
    if kind is str:
        if not isinstance(value, str):
            raise ValueError
        return value
    number = float(value)
    if kind is int:
        if not number.is_integer():
            raise ValueError
        return int(number)
    return number


def expected(kind: object) -> str:
    """A field type as a user reads it."""
    if typing.get_origin(kind) is tuple:
        return f"a comma-separated list of {expected(typing.get_args(kind)[0])}s"
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return names.get(kind, str(kind).replace("typing.", ""))


def override(config: T, assignments: list[str]) -> T:
    """A copy of the dataclass `config` with each `KEY=VALUE` applied (VALUE read as YAML).

    An unknown key or a value of the wrong type is an FdrlError naming it and the valid keys.
    """
    import yaml

    types_ = typing.get_type_hints(type(config))
    changes = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or key not in types_:
            raise FdrlError(
                f"cannot set {assignment!r}: expected KEY=VALUE with KEY one of {', '.join(types_)}"
            )
        try:
            changes[key] = coerce(yaml.safe_load(text), types_[key])
        except (ValueError, TypeError, yaml.YAMLError):
            raise FdrlError(f"cannot set {key}={text!r}: expected {expected(types_[key])}") from None
    return dataclasses.replace(config, **changes)


def help_text(config: object) -> str:
    """One line per field: name, type and default, for `--help`."""
    types_ = typing.get_type_hints(type(config))
    lines = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        lines.append(f"  {field.name}={shown}  ({expected(types_[field.name])})")
    return "\n".join(lines)


def config_hash(config: dict) -> str:
    """A short fingerprint of a resolved config (12 hex digits of the SHA-256 of its sorted JSON):
    tables name the exact settings each computed row came from."""
    text = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
