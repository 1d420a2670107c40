"""Typed hyperparameters: dataclasses whose defaults are the paper's values (DESIGN.md sec. 3),
overridden by `KEY=VALUE` strings from the command line or the workflow config."""

from __future__ import annotations

import dataclasses
import typing
from typing import TypeVar

from fdrl.errors import FdrlError

T = TypeVar("T")


def _parse(text: str, kind: object, key: str) -> object:
    if typing.get_origin(kind) is tuple:
        (item, _) = typing.get_args(kind)
        return tuple(_parse(t, item, key) for t in text.split(",") if t.strip())
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(text)
        return text.lower() == "true"
    return kind(text)  # int, float, str


def override(config: T, assignments: list[str]) -> T:
    """A copy of the dataclass `config` with each `KEY=VALUE` applied, parsed by field type.

    An unknown key or a value of the wrong type is an FdrlError naming it and the valid keys.
    """
    types = typing.get_type_hints(type(config))
    changes = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        if not sep or key not in types:
            raise FdrlError(
                f"cannot set {assignment!r}: expected KEY=VALUE with KEY one of "
                f"{', '.join(types)}"
            )
        try:
            changes[key] = _parse(text.strip(), types[key], key)
        except ValueError:
            raise FdrlError(f"cannot set {key}={text!r}: expected {describe(types[key])}") from None
    return dataclasses.replace(config, **changes)


def describe(kind: object) -> str:
    """A type as a user reads it: int, float, bool, str, or a comma-separated list of int."""
    if typing.get_origin(kind) is tuple:
        return f"a comma-separated list of {typing.get_args(kind)[0].__name__}"
    return kind.__name__


def help_text(config: object) -> str:
    """One line per field: name, type and default, for `--help`."""
    types = typing.get_type_hints(type(config))
    lines = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        shown = ",".join(map(str, value)) if isinstance(value, tuple) else value
        lines.append(f"  {field.name}={shown}  ({describe(types[field.name])})")
    return "\n".join(lines)
