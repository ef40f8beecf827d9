"""The varchain testbed task: variable-length chains, hash split, one-wrong-step slips of three kinds,
teacher completions the real verifier agrees with, and (slow) the warm-started policy's accuracy band."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import pytest

from conspo.testbed import make_task
from conspo.testbed.config import DEFAULT_STEPS, WarmStartConfig
from conspo.testbed.tasks import DEFAULT_DIFFICULTY, VARCHAIN_SLIPS

TOTALS = re.compile(r"^(-?\d+(?:,-?\d+)*) \\boxed\{(-?\d+)\}$")


def totals(completion: str) -> tuple[list[int], int]:
    m = TOTALS.match(completion)
    assert m, completion
    return [int(x) for x in m.group(1).split(",")], int(m.group(2))


def test_split_by_hash_disjoint_across_seeds_and_independent_of_the_seed():
    train = {p.problem for s in range(3) for p in make_task("varchain", seed=s).train_problems(1000)}
    held_out = {p.problem for s in range(3) for p in make_task("varchain", seed=s).eval_problems(300)}
    assert len(held_out) > 600 and not train & held_out
    task = make_task("varchain", seed=5)
    assert all(task._is_eval(t) for t in held_out) and not any(task._is_eval(t) for t in train)


def test_chains_vary_in_length_and_answers_are_exact():
    task = make_task("varchain")
    assert task.difficulty == DEFAULT_DIFFICULTY["varchain"] == 5
    problems = task.train_problems(500)
    steps = Counter(len(re.findall(r"[+-]", p.problem)) for p in problems)
    assert set(steps) == {2, 3, 4, 5}  # 2 to difficulty steps, all of them drawn
    for p in problems:
        assert p.answer == str(eval(p.problem))  # valid Python arithmetic
        written, boxed = totals(task.teacher_completion(p.problem))
        assert boxed == int(p.answer) and written[-1] == boxed
        assert len(written) == len(re.findall(r"[+-]", p.problem))  # one running total per step
    lengths = {len(task.teacher_completion(p.problem)) for p in problems}
    assert max(lengths) - min(lengths) >= 10  # right completions differ in length with the problem
    slipped = [
        task.teacher_completion(p.problem, slip=True, rng=random.Random(i)) for i, p in enumerate(problems)
    ]
    assert max(map(len, slipped)) <= 31  # fits the default 32 new tokens with the eos (28 at difficulty 5)
    one_step = make_task("varchain", difficulty=1).train_problems(20)
    assert all(len(re.findall(r"[+-]", p.problem)) == 1 for p in one_step)


def test_slips_are_one_wrong_step_of_each_kind():
    task = make_task("varchain")
    rng = random.Random(0)
    kinds = Counter()
    for p in task.train_problems(600):
        right, answer = totals(task.teacher_completion(p.problem))
        wrong, boxed = totals(task.teacher_completion(p.problem, slip=True, rng=rng))
        assert boxed != answer and wrong[-1] == boxed  # always wrong, and consistent with what is written
        delta = len(wrong) - len(right)
        if delta == 0:  # off by one at one step, carried through: a constant +-1 shift from there on
            first = next(i for i, (a, b) in enumerate(zip(right, wrong)) if a != b)
            shifts = {b - a for a, b in zip(right[first:], wrong[first:])}
            assert shifts in ({1}, {-1}) and right[:first] == wrong[:first]
            kinds["off"] += 1
        elif delta == -1:  # one step left out: one total fewer
            kinds["skip"] += 1
        else:  # one step applied twice: one total more
            assert delta == 1
            kinds["repeat"] += 1
    assert set(kinds) == set(VARCHAIN_SLIPS) and min(kinds.values()) > 120  # each about a third


def test_teacher_completions_judged_by_the_real_verifier():
    rewards = pytest.importorskip("conspo.rewards")
    task = make_task("varchain", seed=3)
    rng = random.Random(1)
    problems = task.eval_problems(60)
    completions, expected = [], []
    for i, p in enumerate(problems):
        text = task.teacher_completion(p.problem, slip=i % 2 == 1, rng=rng)
        completions.append(text)
        expected.append(totals(text)[1] == task.solve(p.problem))
    assert expected.count(True) == 30  # the slipped ones are all wrong
    with rewards.MathVerifier(num_workers=1, timeout=10.0) as verifier:
        verdicts = verifier.verify_batch(completions, [p.answer for p in problems])
    assert [v.correct for v in verdicts] == expected


def test_own_warm_start_steps_leave_the_default_policy_alone():
    assert WarmStartConfig(task="varchain").steps == DEFAULT_STEPS["varchain"] == 800
    assert WarmStartConfig(task="varchain").cache_key == "b545b93886243243"  # the policy RESULTS.md measured
    assert WarmStartConfig().cache_key == "2f321915161637b5"  # the default policy every test relies on


@pytest.mark.slow
def test_varchain_policy_lands_in_its_band(tmp_path_factory):
    """The warm-started varchain policy is right 20-40% of the time at temperature 1 (band widened to 12-48%
    for other CPUs' floating point), its groups are mostly mixed, and its wrong answers vary in length."""
    from conspo.testbed import ensure_testbed_policy, load_testbed_policy, measure_accuracy

    path = ensure_testbed_policy(task="varchain")  # cached under $CONSPO_CACHE/testbed like the default
    info = json.loads((path / "testbed.json").read_text())
    assert info["config"]["task"] == "varchain"
    model, tok = load_testbed_policy(path)
    task = make_task("varchain", seed=7)
    result = measure_accuracy(model, tok, task.eval_problems(96), samples=4, seed=7)
    assert 0.12 <= result["accuracy"] <= 0.48, result
    assert result["mixed_groups"] >= 0.35, result
