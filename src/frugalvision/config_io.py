"""Dataclass configs to and from YAML, with type checking on load (so a replayed config is the same config)."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from frugalvision.errors import ConfigError

T = TypeVar("T")


def config_to_dict(config: object) -> dict[str, Any]:
    """Return a plain, YAML-safe dict of a (nested) dataclass config; tuples become lists."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value

    return plain(config)


def save_config(config: object, path: str | Path) -> Path:
    """Write a dataclass config as YAML (with a ``_class`` key naming its type)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"_class": f"{type(config).__module__}.{type(config).__qualname__}", **config_to_dict(config)}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    tmp.replace(path)
    return path


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file into a dict.

    Raises:
        ConfigError: missing file or invalid YAML.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist; pass the config.yaml saved in a run directory")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        first_line = str(error).splitlines()[0]
        raise ConfigError(f"config file {path} is not valid YAML ({first_line}); fix or regenerate it") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of field: value; regenerate it with `frugal run`")
    return data


def _convert(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(f"{where}={value!r} has the wrong type; expected {annotation}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}={value!r} is invalid; choose one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping of the fields of {annotation.__name__}")
        return config_from_dict(annotation, value, prefix=f"{where}.")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r} must be a list")
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if origin is tuple and args:
            return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_convert(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping")
        return dict(value)
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{where}={value!r} must be an integer")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(f"{where}={value!r} must be of type {annotation.__name__}")
    return value


def config_from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build a dataclass ``cls`` from a dict, checking field names and types.

    Raises:
        ConfigError: unknown field, or a value of the wrong type (names the field).
    """
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {}
    for key, value in data.items():
        if key == "_class":
            continue
        if key not in names:
            raise ConfigError(f"unknown config field '{prefix}{key}'; valid fields: {', '.join(sorted(names))}")
        kwargs[key] = _convert(value, hints[key], f"{prefix}{key}")
    return cls(**kwargs)
