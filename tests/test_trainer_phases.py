"""A step's time/* keys are its five flat phases, and they add up to time/step."""

from __future__ import annotations

import pytest

from conspo.trainer.step import PHASES, PhaseTimer
from trainer_support import make_trainer


@pytest.mark.parametrize(
    "overrides",
    [
        [],  # one mini-batch, one micro-batch: the credit comes from the gradient forward
        ["batch.mini_batches=2", "batch.micro_batch_size=2", "objective.name=grpo"],  # no-grad credit forward
        ["batch.dynamic_sampling=true", "batch.max_sampling_tries=3"],  # generate/verify in a loop
    ],
    ids=["fused", "split", "dynamic"],
)
def test_phases_add_up_to_the_step(tmp_path, random_policy, parity_math_verifier, overrides):
    trainer = make_trainer(tmp_path, random_policy, "seed=3", *overrides)
    try:
        metrics = trainer.step()
    finally:
        trainer.close()
    assert metrics["step/skipped"] == 0.0, "the seed must give valid groups"
    timed = {key for key in metrics if key.startswith("time/")}
    assert timed == {f"time/{name}" for name in PHASES} | {"time/step"}
    phases = [metrics[f"time/{name}"] for name in PHASES]
    assert all(seconds > 0 for seconds in phases), dict(zip(PHASES, phases))
    assert sum(phases) == pytest.approx(metrics["time/step"], rel=1e-9, abs=1e-9)


def test_a_phase_inside_another_is_refused():
    timer = PhaseTimer()
    with (
        timer("update"),
        pytest.raises(RuntimeError, match="'credit' opened inside phase 'update'"),
        timer("credit"),
    ):
        pass
    with timer("credit"):  # flat phases, one after another, are fine
        pass
    assert set(timer.seconds) == {"update", "credit"}
    assert sum(timer.seconds.values()) == pytest.approx(timer.total, rel=1e-12)
