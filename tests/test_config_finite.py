"""NaN and infinity are refused in every float field of every config dataclass, naming the field.

NaN passes any ``x > 0`` or ``x <= 0`` check, so before this each field needed its own guard and most had
none (``reward.timeout=nan`` switched the hard timeout off, ``optim.lr=inf`` crashed at step 2). The rule
lives in conspo.config; these tests walk the fields instead of listing them, so a new float field is covered
without touching this file.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Union, get_args, get_origin

import pytest

from conspo.config import ConfigError, check_finite, config_fields, config_from_dict, load_config
from conspo.rewards import MathVerifier, RewardConfig
from conspo.testbed.config import TinyModelConfig, WarmStartConfig
from conspo.trainer.config import TrainConfig

BAD = ["nan", "inf", "-inf", ".nan", "-.inf", "1e999"]


def _has_float(tp: Any) -> bool:
    if tp is float:
        return True
    if get_origin(tp) in (Union, types.UnionType, list, tuple):
        return any(_has_float(a) for a in get_args(tp) if a is not Ellipsis)
    return False


def _float_fields(cls: type) -> list[str]:
    return [path for path, tp, _default, _help in config_fields(cls) if _has_float(tp)]


TRAIN_FLOATS = _float_fields(TrainConfig)


def test_the_walk_finds_the_float_fields():
    # Guards the walk itself: if it found nothing, every test below would pass vacuously.
    for known in ("optim.lr", "optim.eps", "optim.betas", "optim.max_grad_norm", "rollout.temperature"):
        assert known in TRAIN_FLOATS
    for known in ("eval.temperature", "eval.top_p", "reward.timeout", "reward.format_reward"):
        assert known in TRAIN_FLOATS
    assert len(TRAIN_FLOATS) >= 14


def _bad_value(path: str, tp: Any, raw: str) -> str:
    # A tuple/list of floats: make one element bad.
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        tp = next(a for a in get_args(tp) if a is not type(None))
        origin = get_origin(tp)
    if origin in (list, tuple):
        n = len(get_args(tp)) if origin is tuple and get_args(tp)[-1] is not Ellipsis else 2
        return "[" + ", ".join(["0.5"] * (n - 1) + [raw]) + "]"
    return raw


@pytest.mark.parametrize("raw", BAD)
@pytest.mark.parametrize("path", TRAIN_FLOATS)
def test_every_train_float_refuses_nan_and_inf_from_overrides(path, raw):
    tp = dict((p, t) for p, t, _d, _h in config_fields(TrainConfig))[path]
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, None, [f"{path}={_bad_value(path, tp, raw)}"])
    assert info.value.field.split("[")[0] == path
    assert "finite" in str(info.value)


def _set_nested(cfg: Any, path: str, value: Any) -> None:
    *parents, name = path.split(".")
    for part in parents:
        cfg = getattr(cfg, part)
    current = getattr(cfg, name)
    if isinstance(current, (tuple, list)):
        value = type(current)([*current[:-1], value])
    object.__setattr__(cfg, name, value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("path", TRAIN_FLOATS)
def test_every_train_float_refuses_nan_and_inf_set_in_code(path, value):
    """A config built in Python (the trainer API) is checked by validate(), before any model loads."""
    cfg = TrainConfig()
    _set_nested(cfg, path, value)
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    assert info.value.field.split("[")[0] == path


def _dataclass_float_fields(cls: type) -> list[str]:
    hints = typing.get_type_hints(cls)
    return [f.name for f in dataclasses.fields(cls) if _has_float(hints[f.name])]


REWARD_FLOATS = _dataclass_float_fields(RewardConfig)


@pytest.mark.parametrize("raw", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", REWARD_FLOATS)
def test_reward_config_refuses_nan_and_inf(name, raw):
    assert {"timeout", "rel_tol", "format_reward", "overlong_penalty_factor"} <= set(REWARD_FLOATS)
    with pytest.raises(ConfigError) as info:  # from a mapping (as conspo train / verl read it)
        config_from_dict(RewardConfig, {name: raw})
    assert info.value.field == name
    with pytest.raises(ValueError, match=rf"RewardConfig\.{name}.*finite"):  # built in code
        RewardConfig(**{name: float(raw)})


TESTBED_FLOATS = _dataclass_float_fields(WarmStartConfig) + [
    f"model.{n}" for n in _dataclass_float_fields(TinyModelConfig)
]


@pytest.mark.parametrize("value", [math.nan, math.inf])
@pytest.mark.parametrize("name", TESTBED_FLOATS)
def test_testbed_config_refuses_nan_and_inf(name, value):
    assert {"slip_rate", "learning_rate", "weight_decay"} <= set(TESTBED_FLOATS)
    with pytest.raises(ConfigError) as info:
        WarmStartConfig(**{name: value})
    assert info.value.field == name


@pytest.mark.parametrize("timeout", [math.nan, math.inf, 0, -1])
def test_math_verifier_refuses_a_timeout_that_is_not_a_finite_positive_number(timeout):
    with pytest.raises(ValueError, match="timeout"):
        MathVerifier(num_workers=1, timeout=timeout)


def test_a_field_may_opt_out_in_its_metadata():
    @dataclasses.dataclass
    class Budget:
        seconds: float = dataclasses.field(
            default=math.inf, metadata={"help": "Wall-clock budget; inf = none.", "nonfinite": True}
        )
        rate: float = dataclasses.field(default=1.0, metadata={"help": "A rate."})

    assert config_from_dict(Budget, {"seconds": "inf"}).seconds == math.inf
    check_finite(Budget())
    with pytest.raises(ConfigError, match="rate"):
        config_from_dict(Budget, {"rate": "inf"})


@pytest.mark.parametrize("value", [-3, 0])
def test_max_train_problems_must_be_positive(value):
    # -3 silently dropped three problems (a negative slice), 0 was ignored on the testbed ("or 2000").
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, None, [f"data.max_train_problems={value}"])
    assert info.value.field == "data.max_train_problems"


@pytest.mark.parametrize("target", ["nan", "inf", "1.5", "-0.1"])
def test_compare_target_must_be_a_finite_accuracy(target, capsys):
    from conspo.cli import main

    with pytest.raises(SystemExit) as info:
        main(["compare", "--target", target, "--report-only", "--out", "/nonexistent"])
    assert info.value.code == 2 and "--target" in capsys.readouterr().err
