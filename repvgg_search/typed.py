"""Dataclasses as JSON, both ways and checked: `to_json` (plain values; a field with `omit_null` metadata is left out
while null, a `transient` one always) and `parse` (a dataclass from JSON, every field checked against its type
hint, the first misfit named by its path). The record schema (`schema.py`) is written in these terms."""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any

from .files import RecordError

OMIT_NULL = {"omit_null": True}  # field metadata: leave the field out of the JSON while it is null
TRANSIENT = {"transient": True}  # field metadata: never written, never read (set by whoever holds the object)


def to_json(value: Any) -> Any:
    """Plain JSON values of a record (or a block): optional blocks left out while null, transient fields never."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            v = getattr(value, f.name)
            if f.metadata.get("transient") or (v is None and f.metadata.get("omit_null")):
                continue
            out[f.name] = to_json(v)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def parse(cls: type, data: Any, where: str) -> Any:
    """`data` as an instance of dataclass `cls`, every field checked against its type; RecordError names the field."""
    if not isinstance(data, dict):
        raise RecordError(f"{where}: expected an object ({cls.__name__}), got {_kind(data)}")
    hints, names = _hints(cls), {f.name for f in dataclasses.fields(cls) if not f.metadata.get("transient")}
    unknown = sorted(set(data) - names)
    if unknown:
        raise RecordError(f"{where}.{unknown[0]}: not a field of {cls.__name__}; fields: {', '.join(sorted(names))}")
    values = {k: _value(hints[k], v, f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**values)
    except TypeError as exc:  # a required field missing
        raise RecordError(f"{where}: {exc}") from None


def _value(hint: Any, value: Any, where: str) -> Any:
    if hint is Any:
        return value
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        return _value(options[0], value, where) if len(options) == 1 else value
    if value is None:
        raise RecordError(f"{where}: null is not allowed here")
    if dataclasses.is_dataclass(hint):
        return parse(hint, value, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        try:
            return hint.parse(value) if hasattr(hint, "parse") else hint(value)
        except ValueError as exc:
            raise RecordError(f"{where}: {exc}") from None
    if origin is list:
        if not isinstance(value, list):
            raise RecordError(f"{where}: expected a list, got {_kind(value)}")
        return [_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)] if args else value
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected an object, got {_kind(value)}")
        return {k: _value(args[1], v, f"{where}.{k}") for k, v in value.items()} if args else value
    return _scalar(hint, value, where)


def _scalar(hint: type, value: Any, where: str) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():  # JSON written by other tools (wandb) may say 6.0
            return int(value)
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif isinstance(value, hint):
        return value
    raise RecordError(f"{where}: expected {hint.__name__}, got {_kind(value)} {value!r:.60}")


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def lookup(record: Any, keys: tuple[str, ...]) -> Any:
    """`record.k0.k1...` of a typed record or block (or `record[k0][k1]...` of plain JSON), None where a level is
    missing or null. Paths are checked against the schema where they are declared (`check_path`)."""
    for k in keys:
        if record is None:
            return None
        record = record.get(k) if isinstance(record, dict) else getattr(record, k, None)
    return record


def field_type(cls: type, name: str) -> Any:
    """The type of field `name` of dataclass `cls`, an optional one's without the None (KeyError when no field)."""
    hint = _hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1 else hint


def has_field(cls: Any, name: str) -> bool:
    return dataclasses.is_dataclass(cls) and name in _hints(cls)
