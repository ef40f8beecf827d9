"""`conspo train rollout.backend=vllm` learns on the testbed: held-out accuracy above each seed's lr=0 control.

The design of tests/test_trainer_learning.py (its docstring says why): the `conspo train` defaults cut to 18
steps, several seeds, each against its own policy before training evaluated on the same draws (the engine's
per-request seeds), a mean margin and every seed above. Rollouts AND evaluation run on the vLLM engine, so
this also checks that the engine follows the policy: with stale weights nothing would change.
"""

from __future__ import annotations

import pytest

from conspo.trainer.loop import train
from trainer_support import QUIET, assert_beats_lr0_control, train_config

SEEDS = (0, 1, 2)
RUN = [
    "steps=18",
    "eval.every=0",
    "eval.at_start=true",
    *QUIET,
    "checkpoint.save_final=false",
    "rollout.backend=vllm",
    "rollout.vllm_kv_cache_gb=0.1",
]
MEAN_GAIN = 0.08  # as the hf test: under half of the gains measured there (+0.13 to +0.20)


@pytest.mark.slow
def test_vllm_training_beats_the_lr0_control_on_every_seed(tmp_path):
    assert_beats_lr0_control(tmp_path, "vllm", RUN, SEEDS, mean_gain=MEAN_GAIN)


@pytest.mark.slow
def test_vllm_lr0_control_is_the_initial_accuracy(tmp_path):
    """The paired design's premise under vllm: a policy that never moves scores the same before and after."""
    result = train(train_config(tmp_path, "optim.lr=0", "steps=2", run_name="lr0", base=RUN))
    assert result.eval_after == result.eval_before
