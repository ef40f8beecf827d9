"""The held-out evaluation a compare runs with: more problems and draws on the testbed unless told otherwise."""

from __future__ import annotations

import argparse

import pytest

from conspo.compare.cli import EVAL_PROBLEMS, EVAL_SAMPLES, _base_config, add_arguments


def base(*argv: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return _base_config(parser.parse_args(["--objectives", "grpo", *argv]))


def test_testbed_default_is_256_problems_x_2_samples():
    cfg = base()
    assert (cfg.eval.max_problems, cfg.eval.samples) == (EVAL_PROBLEMS, EVAL_SAMPLES) == (256, 2)
    assert base("--task", "varchain").eval.max_problems == 256


def test_flags_and_set_win_over_the_default():
    cfg = base("--eval-problems", "100", "--eval-samples", "8")
    assert (cfg.eval.max_problems, cfg.eval.samples) == (100, 8)
    cfg = base("--set", "eval.max_problems=4", "--set", "eval.samples=1")
    assert (cfg.eval.max_problems, cfg.eval.samples) == (4, 1)
    cfg = base("--set", "eval.samples=3")
    assert (cfg.eval.max_problems, cfg.eval.samples) == (256, 3)


def test_a_small_task_gets_all_its_held_out_problems():
    from conspo.testbed import make_task

    have = len(make_task("mul", difficulty=2).eval_problems(10_000, at_most=True))
    assert 100 < have < 256  # 90 x 8 problems, a fifth held out
    assert base("--task", "mul").eval.max_problems == have
    with pytest.raises(ValueError, match="distinct eval problems"):
        make_task("mul").eval_problems(have + 1)


def test_a_config_file_or_other_data_keeps_its_own_evaluation(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("eval:\n  samples: 4\n")
    cfg = base("--config", str(cfg_file))
    assert (cfg.eval.max_problems, cfg.eval.samples) == (64, 4)  # the trainer's defaults stand
