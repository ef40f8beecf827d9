"""The public surface of conspo.rewards: import hygiene, reward function, shaping, config errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conspo.rewards import (
    MathVerifier,
    Reason,
    RewardConfig,
    Verdict,
    build_reward_fn,
    overlong_penalty,
)


@pytest.fixture(scope="module")
def reward_fn():
    fn = build_reward_fn(RewardConfig(num_workers=1, timeout=5.0))
    yield fn
    fn.close()


def test_import_loads_neither_torch_nor_math_verify():
    code = (
        "import sys, conspo.rewards\n"
        "bad = [m for m in ('torch', 'math_verify', 'sympy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_reward_fn_returns_binary_rewards_and_verdicts(reward_fn):
    completions = [
        "Reasoning... so \\boxed{\\frac{1}{2}}.",
        "The answer is 7",
        [{"role": "assistant", "content": "hence \\boxed{x+1}"}],  # TRL conversational format
        "no idea",
    ]
    answers = ["0.5", "8", "1+x", "3"]
    assert reward_fn(None, completions, answers) == [1.0, 0.0, 1.0, 0.0]
    verdicts = reward_fn.score(None, completions, answer=answers)  # TRL passes dataset columns by name
    assert [v.reason for v in verdicts] == ["numeric", "not_equal", "symbolic", "no_answer"]
    assert all(isinstance(v, Verdict) for v in verdicts)
    assert verdicts[0].extracted == "\\frac{1}{2}"


def test_format_reward_and_overlong_penalty_shape_reward_not_label(reward_fn):
    config = RewardConfig(num_workers=1, format_reward=0.1, overlong_max_len=100, overlong_buffer_len=20)
    with build_reward_fn(config) as fn:
        completions = ["<think>ok</think> \\boxed{4}", "<think>ok</think> \\boxed{5}", "the answer: 4"]
        verdicts = fn.score(None, completions, ["4", "4", "4"], completion_lengths=[90, 50, 120])
    assert [v.correct for v in verdicts] == [True, False, True]
    assert verdicts[0].reward == pytest.approx(1.0 + 0.1 - 0.5)  # 10 tokens into a 20-token buffer
    assert verdicts[1].reward == pytest.approx(0.1)
    assert verdicts[2].reward == pytest.approx(1.0 - 1.0)  # past L_max, no box: no format bonus


def test_overlong_penalty_follows_dapo_ramp():
    assert overlong_penalty(80, 100, 20) == 0.0
    assert overlong_penalty(90, 100, 20) == pytest.approx(-0.5)
    assert overlong_penalty(100, 100, 20) == pytest.approx(-1.0)
    assert overlong_penalty(101, 100, 20, factor=2.0) == -2.0


def test_overlong_penalty_needs_lengths(reward_fn):
    config = RewardConfig(num_workers=1, overlong_max_len=100, overlong_buffer_len=10)
    with build_reward_fn(config) as fn, pytest.raises(ValueError, match="completion_lengths"):
        fn(None, ["\\boxed{1}"], ["1"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout": 0}, "timeout"),
        ({"num_workers": 0}, "num_workers"),
        ({"think": "before"}, "think"),
        ({"fallback": "first_number"}, "fallback"),
        ({"rel_tol": 2.0}, "rel_tol"),
        ({"overlong_max_len": 10, "overlong_buffer_len": 20}, "overlong_buffer_len"),
    ],
)
def test_bad_config_names_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RewardConfig(**kwargs)


def test_bad_custom_verifier_path_fails_at_construction():
    with pytest.raises(ValueError, match="no_such_module_xyz"):
        MathVerifier(num_workers=1, custom_verifier="no_such_module_xyz:score")
    with pytest.raises(ValueError, match="has no attribute"):
        MathVerifier(num_workers=1, custom_verifier="conspo.rewards:no_such_function")


def test_mismatched_lengths_raise(reward_fn):
    with pytest.raises(ValueError, match="2 completions but 1 answers"):
        reward_fn(None, ["a", "b"], ["1"])


def test_reason_is_a_string_enum():
    assert Reason.TIMEOUT == "timeout" and str(Reason.INVALID_GOLD) == "invalid_gold"
