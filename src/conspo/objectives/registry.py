"""One registry of objectives: `register_objective`, `get_objective`, `list_objectives`.

`get_objective` takes a name and hyperparameters, or a spec string `"name:key=value,key=value"` whose
values are coerced to each field's declared type (the form `conspo compare` uses).

The built-in objectives register themselves when `conspo.objectives` (the package) imports their modules;
this module imports none of them, so the registry sits below every objective in the import graph.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from .base import Objective

__all__ = [
    "get_objective",
    "hyperparameter_field",
    "list_objectives",
    "objective_class",
    "parse_objective_spec",
    "register_objective",
]

_REGISTRY: dict[str, type[Objective]] = {}
T = TypeVar("T", bound=type[Objective])


def register_objective(name: str) -> Callable[[T], T]:
    """Class decorator: register an `Objective` dataclass under `name`; a taken name raises ValueError."""

    def decorate(cls: T) -> T:
        if not (isinstance(cls, type) and issubclass(cls, Objective) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"register_objective({name!r}) needs an Objective dataclass, got {cls!r}")
        if name in _REGISTRY:
            raise ValueError(f"objective {name!r} is already registered (by {_REGISTRY[name].__qualname__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def list_objectives() -> list[str]:
    """Registered objective names, sorted."""
    return sorted(_REGISTRY)


def objective_class(name: str) -> type[Objective]:
    """The class registered under `name`; unknown names raise ValueError listing the valid ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown objective {name!r}; valid names: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def _hyperparameter_fields(cls: type[Objective]) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _coerce(cls: type[Objective], key: str, text: str) -> Any:
    hints = typing.get_type_hints(cls)
    hint = hints.get(key, str)
    owner = f"{cls.name}.{key}"
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if type(None) in options and text.strip().lower() in ("none", "null", ""):
        return None
    errors = []
    for option in options:
        if option is type(None):
            continue
        if typing.get_origin(option) is typing.Literal:
            if text in typing.get_args(option):
                return text
            errors.append(f"one of {typing.get_args(option)}")
        elif option is bool:
            lowered = text.strip().lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            errors.append("a boolean")
        elif option is int:
            try:
                return int(text)
            except ValueError:
                errors.append("an integer")
        elif option is float:
            try:
                return float(text)
            except ValueError:
                errors.append("a number")
        elif option is str:
            return text
    raise ValueError(f"{owner}: cannot read {text!r} as {' or '.join(errors)}")


def parse_objective_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """`"conspo:credit=linear,margin=none"` -> ("conspo", {"credit": "linear", "margin": "none"}), typed."""
    name, _, rest = spec.partition(":")
    name = name.strip()
    cls = objective_class(name)
    fields = _hyperparameter_fields(cls)
    hparams: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = item.partition("=")
        key = cls.aliases.get(key.strip(), key.strip())
        if not eq:
            raise ValueError(f"objective spec {spec!r}: {item!r} is not key=value")
        if key not in fields:
            raise ValueError(
                f"objective spec {spec!r}: {name} has no hyperparameter {key!r}; valid: {_valid_names(cls)}"
            )
        hparams[key] = _coerce(cls, key, value.strip())
    return name, hparams


def get_objective(name: str, **hyperparameters: Any) -> Objective:
    """Build the objective `name` (or a `"name:key=value,..."` spec) with the given hyperparameters.

    Unknown names, unknown hyperparameters and out-of-range values raise ValueError naming the culprit.
    Keyword arguments override values given in the spec string.
    """
    if not isinstance(name, str):
        raise TypeError(f"objective name must be a string, got {type(name).__name__}")
    base, spec_hparams = parse_objective_spec(name) if ":" in name else (name.strip(), {})
    cls = objective_class(base)
    fields = _hyperparameter_fields(cls)
    merged = dict(spec_hparams)
    for key, value in hyperparameters.items():
        merged[cls.aliases.get(key, key)] = value
    unknown = sorted(set(merged) - set(fields))
    if unknown:
        raise ValueError(
            f"{base}: unknown hyperparameter(s) {', '.join(map(repr, unknown))}; valid: {_valid_names(cls)}"
        )
    return cls(**merged)


def _valid_names(cls: type[Objective]) -> str:
    names = sorted(_hyperparameter_fields(cls))
    aliases = [f"{alias} (= {target})" for alias, target in sorted(cls.aliases.items())]
    return ", ".join(names + aliases)


def hyperparameter_field(objective: str | type[Objective], name: str) -> Any:
    """A `dataclasses.field` with the default and help of `objective`'s hyperparameter `name` (or alias).

    Framework configs that expose an objective's options (TRL's `ConSPOConfig`, verl's `algorithm.conspo`)
    declare them with this, so their defaults and help are the objective's own and cannot drift.
    """
    cls = objective_class(objective) if isinstance(objective, str) else objective
    key = cls.aliases.get(name, name)
    fields = _hyperparameter_fields(cls)
    if key not in fields:
        raise ValueError(f"{cls.name}: no hyperparameter {name!r}; valid: {_valid_names(cls)}")
    source = fields[key]
    if source.default is dataclasses.MISSING:
        raise ValueError(f"{cls.name}.{key} has no plain default to copy")
    return dataclasses.field(default=source.default, metadata={"help": source.metadata.get("help", "")})
