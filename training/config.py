"""Run configuration: one YAML file plus ``key=value`` command-line overrides (torchtune style).

A recipe's parameters are a dataclass that checks itself in ``__post_init__``; this module only
turns YAML + overrides into the keyword arguments of that dataclass and writes the resolved result
beside each checkpoint, so every checkpoint says exactly how it was made.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


def parse_value(text: str) -> Any:
    """Parse one override value with YAML rules (``3`` → int, ``1e-3`` → float, ``[a, b]`` → list).

    Args:
        text: the text after ``=``.

    Returns:
        The parsed value; the text itself when YAML does not parse it.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, str):
        try:
            return float(value) if any(c in value for c in "eE.") and value[0].isdigit() else value
        except ValueError:
            return value
    return value


def apply_overrides(config: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``config`` with dotted ``key=value`` overrides applied.

    Args:
        config: the loaded YAML mapping.
        overrides: items like ``max_steps=10`` or ``optim.lr=1e-4``.

    Returns:
        A new mapping.

    Raises:
        ConfigError: an item has no ``=`` or walks into a non-mapping.
    """
    out = json.loads(json.dumps(config))
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} is not a mapping")
        node[parts[-1]] = parse_value(raw)
    return out


def load_config(path: Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Load a YAML config and apply overrides.

    Args:
        path: YAML file; None starts from an empty mapping.
        overrides: ``key=value`` items.

    Returns:
        The resolved mapping.

    Raises:
        ConfigError: the file is unreadable or not a mapping.
    """
    base: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ConfigError(f"reading config {path}: {e}") from e
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"config {path}: top level must be a mapping")
        base = loaded or {}
    return apply_overrides(base, overrides)


def build(cls: type[T], values: Mapping[str, Any]) -> T:
    """Build a (possibly nested) config dataclass from a mapping, refusing unknown keys.

    Args:
        cls: a dataclass type.
        values: its fields; nested dataclass fields take nested mappings.

    Returns:
        The instance (its ``__post_init__`` checks run).

    Raises:
        ConfigError: unknown keys, or the dataclass rejected a value.
    """
    if not dataclasses.is_dataclass(cls):
        raise ConfigError(f"{cls!r} is not a dataclass")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{cls.__name__}: unknown keys {unknown}; known: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    hints = _resolved_types(cls)
    for name, value in values.items():
        sub = _dataclass_of(hints.get(name))
        if sub is not None and isinstance(value, Mapping):
            kwargs[name] = build(sub, value)
        else:
            kwargs[name] = tuple(value) if isinstance(value, list) else value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{cls.__name__}: {e}") from e


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass a field holds: ``X`` for ``X`` and for ``X | None``; None otherwise."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        classes = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(classes) == 1 and isinstance(classes[0], type) and dataclasses.is_dataclass(classes[0]):
            return classes[0]
    return None


def _resolved_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except (NameError, TypeError):
        return {}


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready mapping of a config dataclass (paths as strings, tuples as lists)."""
    raw = dataclasses.asdict(config)
    result: dict[str, Any] = json.loads(json.dumps(raw, default=str))
    return result


def save_resolved(config: Any, folder: Path) -> Path:
    """Write ``folder/config.yaml``: the resolved config of the run that wrote this checkpoint.

    Args:
        config: the run's config dataclass.
        folder: the checkpoint folder.

    Returns:
        The written path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(to_dict(config), sort_keys=True))
    return path
