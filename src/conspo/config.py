"""Dataclass configs <-> YAML, ``key=value`` overrides, validation errors and a markdown reference.

Any command whose settings are a tree of dataclasses reuses these helpers::

    cfg = load_config(TrainConfig, "run.yaml", ["batch.group_size=8", "objective.params.tau=5"])
    print(dump_yaml(cfg))                  # the resolved config
    print(markdown_reference(TrainConfig))  # one table row per field, from each field's help

A field documents itself with ``field(default=..., metadata={"help": "..."})``. Values from YAML and
overrides are coerced to the annotated type (``int``, ``float``, ``bool``, ``str``, ``Literal``,
``X | None``, ``list[...]``, ``tuple[...]``, ``dict``, nested dataclasses); a value that does not fit
raises :class:`ConfigError` naming the dotted field path.

Every float must be finite (NaN and infinity pass any ``x > 0`` check and then break the run far from
the setting): the one rule lives here, in :func:`_coerce` for YAML and overrides and in
:func:`check_finite` for configs built in code. A field that gives inf a meaning opts out with
``metadata={"help": "... inf = ...", "nonfinite": True}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

__all__ = [
    "ConfigError",
    "config_fields",
    "config_from_dict",
    "config_to_dict",
    "apply_overrides",
    "load_config",
    "dump_yaml",
    "markdown_reference",
    "help_text",
    "check_finite",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value is missing, unknown or invalid; ``field`` is its dotted path (``batch.group_size``)."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _not_finite(path: str, value: Any) -> ConfigError:
    return ConfigError(path, f"must be a finite number; got {value}")


def _coerce(value: Any, tp: Any, path: str, finite: bool = True) -> Any:
    """Convert ``value`` (from YAML or an override) to the annotated type ``tp`` or raise ConfigError.

    ``finite``: floats (also inside lists and tuples) must be finite (see the module docstring).
    """
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "~")):
            if type(None) in args:
                return None
            raise ConfigError(path, f"must not be None (expected {_type_name(tp)})")
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, path, finite)
            except ConfigError as e:
                if "finite" in str(e):
                    raise
                errors.append(str(e))
        raise ConfigError(path, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value in choices:
            return value
        raise ConfigError(path, f"must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping of {tp.__name__} fields, got {value!r}")
        return config_from_dict(tp, value, path)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(path, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(path, f"expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise ConfigError(path, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(path, f"expected a number, got {value!r}")
        number: float | None = None
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str):
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None:
            raise ConfigError(path, f"expected a number, got {value!r}")
        if finite and not math.isfinite(number):  # also "1e999", which parses to inf
            raise _not_finite(path, value)
        return number
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(path, f"expected a string, got {value!r}")
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, str):
            value = (
                yaml.safe_load(value) if value.strip().startswith("[") else [v for v in value.split(",") if v]
            )
        if not isinstance(value, (list, tuple)):
            raise ConfigError(path, f"expected a list, got {value!r}")
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(path, f"expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{path}[{i}]", finite) for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{path}[{i}]", finite) for i, v in enumerate(value)]
        return tuple(out) if (origin is tuple or tp is tuple) else out
    if origin is dict or tp is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(path, f"expected a mapping, got {value!r}")
        return dict(value)
    return value


def config_fields(cls: type) -> list[tuple[str, Any, Any, str]]:
    """Every leaf field of a dataclass tree as ``(dotted_path, type, default, help)``, in declaration order."""
    rows: list[tuple[str, Any, Any, str]] = []
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if _is_dataclass_type(tp):
            rows.extend((f"{f.name}.{p}", t, d, h) for p, t, d, h in config_fields(tp))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        rows.append((f.name, tp, default, f.metadata.get("help", "")))
    return rows


def config_from_dict(cls: type[T], data: dict[str, Any], path: str = "") -> T:
    """Build ``cls`` from a nested mapping; unknown keys raise ConfigError listing the valid ones."""
    if not isinstance(data, dict):
        raise ConfigError(path, f"expected a mapping, got {type(data).__name__}")
    hints = _hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        sub = f"{path}.{key}" if path else str(key)
        if key not in names:
            raise ConfigError(
                sub, f"unknown field; valid fields of {path or cls.__name__}: {', '.join(names)}"
            )
        kwargs[key] = _coerce(value, hints[key], sub, finite=not _nonfinite_allowed(names[key]))
    missing = [
        n
        for n, f in names.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{path}.{missing[0]}" if path else missing[0], "required field is missing")
    return cls(**kwargs)


def _nonfinite_allowed(f: dataclasses.Field) -> bool:
    return bool(f.metadata.get("nonfinite"))


def _floats(value: Any, path: str) -> list[tuple[str, float]]:
    if isinstance(value, float):
        return [(path, value)]
    if isinstance(value, (list, tuple)):
        return [pair for i, v in enumerate(value) for pair in _floats(v, f"{path}[{i}]")]
    return []


def check_finite(obj: Any, path: str = "") -> None:
    """Raise ConfigError naming the first float field of a dataclass tree that is NaN or infinite.

    The same rule as loading from YAML / overrides applies, for configs built or changed in code
    (call it from ``validate()``); fields marked ``"nonfinite": True`` are exempt.
    """
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        sub = f"{path}.{f.name}" if path else f.name
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_finite(value, sub)
            continue
        if _nonfinite_allowed(f):
            continue
        for where, number in _floats(value, sub):
            if not math.isfinite(number):
                raise _not_finite(where, number)


def config_to_dict(obj: Any) -> Any:
    """A dataclass tree as plain dicts/lists/scalars (tuples become lists), ready for YAML or JSON."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [config_to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): config_to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = tree
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def _check_path(cls: type, dotted: str) -> None:
    """Raise ConfigError unless ``dotted`` names a field (free-form dict fields accept any sub-key)."""
    node: Any = cls
    parts = dotted.split(".")
    for i, key in enumerate(parts):
        here = ".".join(parts[: i + 1])
        if not _is_dataclass_type(node):
            return  # inside a dict field: any key
        hints = _hints(node)
        if key not in hints:
            valid = ", ".join(f.name for f in dataclasses.fields(node))
            raise ConfigError(here, f"unknown field; valid fields here: {valid}")
        node = hints[key]
        if get_origin(node) in (Union, types.UnionType):
            node = next((a for a in get_args(node) if a is not type(None)), node)
    if _is_dataclass_type(node):
        raise ConfigError(dotted, "is a section; set one of its fields (section.field=value)")


def apply_overrides(cls: type, tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (value parsed as YAML) to a nested mapping for ``cls``."""
    tree = dict(tree)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(item, "an override must look like section.key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        _check_path(cls, key)
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        _set_path(tree, key, value)
    return tree


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> T:
    """Defaults of ``cls``, then the YAML file at ``path`` (if any), then ``key=value`` overrides.

    Calls ``validate()`` on the result when ``cls`` defines it.
    """
    tree: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("--config", f"file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError("--config", f"{p} is not valid YAML: {e}") from e
        if not isinstance(loaded, dict):
            raise ConfigError("--config", f"{p} must hold a mapping at the top level")
        tree = loaded
    tree = _deep_merge({}, apply_overrides(cls, tree, list(overrides)))
    cfg = config_from_dict(cls, tree)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def dump_yaml(obj: Any) -> str:
    """The config as YAML, fields in declaration order."""
    return yaml.safe_dump(config_to_dict(obj), sort_keys=False, default_flow_style=False)


def _default_repr(default: Any) -> str:
    if default is dataclasses.MISSING:
        return "(required)"
    return repr(config_to_dict(default))


def markdown_reference(cls: type) -> str:
    """A markdown table with one row per field: key, type, default, help."""
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for path, tp, default, help_ in config_fields(cls):
        cell = help_.replace("|", "\\|").replace("\n", " ")
        tname = _type_name(tp).replace("|", "\\|")
        lines.append(f"| `{path}` | {tname} | `{_default_repr(default)}` | {cell} |")
    return "\n".join(lines)


def help_text(cls: type, width: int = 34) -> str:
    """Plain-text field list for ``--help``: ``key = default`` and the help line under it."""
    out = []
    for path, _tp, default, help_ in config_fields(cls):
        out.append(f"  {path} = {_default_repr(default)}")
        if help_:
            out.append(f"      {help_}")
    return "\n".join(out)
