"""A short run on the testbed raises held-out accuracy above an lr=0 control, for ConSPO and for GRPO."""

from __future__ import annotations

import pytest

from conspo.trainer.loop import train
from trainer_support import QUIET, train_config

# Same seed, same held-out problems and the same evaluation draws for every run.
RUN = [
    "steps=12",
    "seed=0",
    "batch.prompts_per_step=16",
    "batch.group_size=8",
    "optim.lr=2e-4",
    "rollout.max_new_tokens=24",
    "eval.max_problems=48",
    "eval.samples=4",
    "eval.at_start=false",
    "eval.every=0",
    *QUIET,
    "checkpoint.save_final=false",
]
MARGIN = 0.08  # absolute avg@4 points the trained policy must beat the control by


def _after(tmp_path, name: str, *extra: str) -> float:
    result = train(train_config(tmp_path, *extra, run_name=name, base=RUN))
    assert result.eval_after is not None
    return result.eval_after


@pytest.fixture(scope="module")
def control(tmp_path_factory) -> float:
    return _after(tmp_path_factory.mktemp("control"), "lr0", "optim.lr=0")


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["conspo", "grpo"])
def test_training_beats_the_lr0_control(tmp_path, control, objective):
    trained = _after(tmp_path, objective, f"objective.name={objective}")
    assert trained >= control + MARGIN, f"{objective}: {trained:.3f} vs lr=0 control {control:.3f}"
