"""One way to turn a TOML/JSON settings file into a frozen (nested) dataclass, with errors that name the key.

Every run in this project (GAN and reconstruction training, the audit, synthetic data) is described by a
small file whose sections map onto frozen dataclasses. A typo or a wrong type must fail loudly with the
file, the section and the key (``runs.toml: train.stepz ...``), never fall back to a default, so the same
rules apply everywhere:

* keys absent from the data keep the dataclass defaults; unknown keys are errors listing the known ones;
* a nested dataclass field needs a table; ``tuple[...]`` fields need a list (fixed-length tuples of that
  length), with each element checked against the element type;
* ``bool`` needs true/false; ``int`` an integer (``3.0`` is accepted, ``3.5`` and ``true`` are not);
* ``float`` any number except a bool; ``str`` a string; other annotations take the value as it is.

Field types come from the dataclass annotations (``typing.get_type_hints``), so ``from __future__ import
annotations`` modules work. The error class is the caller's (``error_type``), so each module keeps its own.
"""

from __future__ import annotations

import json
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
ErrorType = Callable[[str], Exception]


def build_dataclass(
    cls: type[T],
    data: Mapping[str, Any],
    where: str = "",
    error_type: ErrorType = ValueError,
    *,
    non_negative: bool = False,
) -> T:
    """``cls`` with the defaults overridden by ``data`` (checked as described in the module docstring).

    ``where`` names the source (a file path or a label such as ``"checkpoint config"``) and starts every
    message; keys are named by their dotted path (``model.image_size``). ``non_negative`` also rejects
    negative numbers anywhere in the tree (for configs where every number is a size or a count).
    """
    return _build(cls, data, where, "", error_type, non_negative)


def _build(cls: type[T], data: Any, where: str, prefix: str, error_type: ErrorType, non_negative: bool) -> T:
    if not isinstance(data, Mapping):
        what = f"[{prefix.rstrip('.')}]" if prefix else "the top level"
        raise error_type(_at(where, f"{what} must be a table, got {data!r}"))
    hints = _type_hints(cls)
    known = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in known:
            section = f" in [{prefix.rstrip('.')}]" if prefix else ""
            raise error_type(_at(where, f"unknown key '{name}' (known{section}: {', '.join(known)})"))
        expected = hints.get(key, Any)
        if isinstance(expected, type) and is_dataclass(expected):
            kwargs[key] = _build(expected, value, where, f"{name}.", error_type, non_negative)
        else:
            kwargs[key] = _convert(value, expected, name, where, error_type, non_negative)
    return cls(**kwargs)


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):  # an annotation that cannot be resolved: fall back to the defaults' types
        return {f.name: type(getattr(cls(), f.name)) for f in fields(cls)}


def _convert(value: Any, expected: Any, name: str, where: str, error_type: ErrorType, non_negative: bool) -> Any:
    def fail(requirement: str) -> Exception:
        return error_type(_at(where, f"{name} must be {requirement}, got {value!r}"))

    origin = typing.get_origin(expected)
    if expected is tuple or origin is tuple:
        if not isinstance(value, list | tuple):
            raise fail("a list")
        args = typing.get_args(expected)
        if len(args) == 2 and args[1] is Ellipsis:
            element_types = [args[0]] * len(value)
        elif args:
            if len(value) != len(args):
                raise fail(f"a list of {len(args)} values")
            element_types = list(args)
        else:
            element_types = [Any] * len(value)
        return tuple(
            _convert(item, kind, f"{name}[{index}]", where, error_type, non_negative)
            for index, (item, kind) in enumerate(zip(value, element_types, strict=True))
        )
    if expected is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if expected is int or expected is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("an integer" if expected is int else "a number")
        if expected is int and not float(value).is_integer():
            raise fail("an integer")
        if non_negative and value < 0:
            raise fail("a number >= 0")
        return expected(value)
    if expected is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    return value  # Any, or an annotation no config uses (unions, dicts): taken as it is


def _at(where: str, message: str) -> str:
    return f"{where}: {message}" if where else message


def _read_text(path: Path, error_type: ErrorType) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise error_type(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise error_type(f"{path}: not a UTF-8 text file ({exc})") from exc


def load_toml(path: str | Path, error_type: ErrorType = ValueError) -> dict[str, Any]:
    """The table in a TOML file; unreadable or invalid files raise ``error_type`` naming the file."""
    path = Path(path)
    text = _read_text(path, error_type)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error_type(f"{path}: not valid TOML ({exc})") from exc


def load_settings(path: str | Path, error_type: ErrorType = ValueError) -> dict[str, Any]:
    """A settings table from ``.toml`` (TOML) or any other suffix (JSON object), naming the file on errors."""
    path = Path(path)
    if path.suffix.lower() == ".toml":
        return load_toml(path, error_type)
    text = _read_text(path, error_type)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise error_type(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise error_type(f"{path}: expected an object at the top level, got {type(data).__name__}")
    return data


__all__ = ["build_dataclass", "load_settings", "load_toml"]
