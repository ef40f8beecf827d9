"""Testbed tasks: deterministic from the seed, disjoint splits, right answers, teacher slips the verifier catches."""

from __future__ import annotations

import random

import pytest

from conspo.testbed import TASKS, make_task


@pytest.mark.parametrize("name", sorted(TASKS))
def test_deterministic_in_the_seed(name):
    a = make_task(name, seed=3).train_problems(50)
    b = make_task(name, seed=3).train_problems(50)
    c = make_task(name, seed=4).train_problems(50)
    assert a == b
    assert [p.problem for p in a] != [p.problem for p in c]
    # asking for more never changes the first ones, and the eval split is its own stream
    assert make_task(name, seed=3).train_problems(80)[:50] == a
    assert make_task(name, seed=3).eval_problems(20) == make_task(name, seed=3).eval_problems(40)[:20]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_train_and_eval_disjoint_across_seeds(name):
    train = {p.problem for seed in (0, 1) for p in make_task(name, seed=seed).train_problems(300)}
    held_out = {p.problem for seed in (0, 1) for p in make_task(name, seed=seed).eval_problems(60)}
    assert len(held_out) > 60  # the two seeds drew different problems
    assert not train & held_out


@pytest.mark.parametrize(
    ("name", "difficulty"), [("add", 1), ("add", 2), ("add", 4), ("mul", 2), ("mul", 3), ("chain", 3)]
)
def test_answers_are_exact_integer_strings(name, difficulty):
    task = make_task(name, difficulty=difficulty)
    for p in task.train_problems(200):
        assert p.answer == str(eval(p.problem))  # the problems are valid Python arithmetic
    assert len({p.id for p in task.train_problems(200)}) == 200


@pytest.mark.parametrize("name", sorted(TASKS))
def test_teacher_right_and_slipped_completions(name):
    task = make_task(name)
    rng = random.Random(0)
    for p in task.train_problems(100):
        good = task.teacher_completion(p.problem)
        assert good.endswith(f"\\boxed{{{p.answer}}}")
        bad = task.teacher_completion(p.problem, slip=True, rng=rng)
        assert bad.count("\\boxed{") == 1 and not bad.endswith(f"\\boxed{{{p.answer}}}")


def test_teacher_completions_judged_by_the_real_verifier():
    rewards = pytest.importorskip("conspo.rewards")
    task = make_task("add")
    problems = task.train_problems(10)
    completions = [task.teacher_completion(p.problem, slip=i % 2 == 1) for i, p in enumerate(problems)]
    with rewards.MathVerifier(num_workers=1, timeout=10.0) as verifier:
        verdicts = verifier.verify_batch(completions, [p.answer for p in problems])
    assert [v.correct for v in verdicts] == [i % 2 == 0 for i in range(10)]


def test_column_arithmetic_format():
    add, mul = make_task("add"), make_task("mul")
    assert add.teacher_completion("16+75") == "11,9 \\boxed{91}"  # 6+5=11, carry 1: 1+7+1=9
    assert (
        add.teacher_completion("16+75", slip=True, rng=random.Random(0)) == "11,8 \\boxed{81}"
    )  # carry dropped
    assert (
        add.teacher_completion("63+45", slip=True, rng=random.Random(0)) == "8,11 \\boxed{118}"
    )  # carry invented
    assert mul.teacher_completion("37*8") == "56,29 \\boxed{296}"  # 7*8=56, 3*8+5=29
    assert make_task("chain").teacher_completion("6+4-3+5") == "10,7,12 \\boxed{12}"


def test_small_spaces_repeat_in_train_and_refuse_in_eval():
    task = make_task("mul", difficulty=1)  # 10 x 8 problems in all
    train = task.train_problems(200)
    assert len(train) == 200 and len({p.problem for p in train}) < 80
    with pytest.raises(ValueError, match="distinct eval problems"):
        task.eval_problems(100)


def test_bad_names_and_difficulties():
    with pytest.raises(ValueError, match="unknown testbed task 'div'"):
        make_task("div")
    with pytest.raises(ValueError, match="between 1 and 8"):
        make_task("add", difficulty=0)
    with pytest.raises(ValueError, match=">= 0"):
        make_task("add").train_problems(-1)
