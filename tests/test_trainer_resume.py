"""Kill-and-resume determinism: a run stopped after a checkpoint and resumed ends with the same weights."""

from __future__ import annotations

import json

import pytest
import torch

from conspo.config import load_config
from conspo.trainer.checkpoint import latest_checkpoint
from conspo.trainer.config import TrainConfig
from conspo.trainer.loop import Trainer
from trainer_support import QUIET, child_env, save_random_policy, train_config

RUN = [
    "steps=4",
    "seed=5",
    "batch.prompts_per_step=4",
    "batch.group_size=4",
    "batch.mini_batches=2",
    "objective.name=conspo",
    "optim.schedule=cosine",
    "optim.warmup_steps=1",
    "rollout.max_new_tokens=16",
    "eval.at_start=false",
    "eval.max_problems=2",
    "eval.samples=1",
    *QUIET,
    "checkpoint.save_final=false",
]


@pytest.fixture()
def policy(tmp_path, parity_math_verifier):
    """A random tiny Llama with the testbed tokenizer, and the parity verifier in place of math-verify."""
    return save_random_policy(tmp_path / "policy")


def _cfg(tmp_path, name: str, *extra: str) -> TrainConfig:
    return train_config(tmp_path, *extra, policy=tmp_path / "policy", run_name=name, base=RUN)


def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(tmp_path, policy):
    straight = Trainer(_cfg(tmp_path, "straight"))
    initial = [p.detach().clone() for p in straight.model.parameters()]
    straight.run()

    first = Trainer(_cfg(tmp_path, "resumed", "stop_after=2"))
    result = first.run()
    assert result.steps_done == 2
    ckpt = latest_checkpoint(tmp_path / "resumed")
    assert ckpt is not None and ckpt.name == "checkpoint-000002"
    del first  # the "killed" process is gone; only the checkpoint survives

    resumed = Trainer(_cfg(tmp_path, "resumed"), resume=True)
    assert resumed.step_index == 2 and resumed.cursor == 2 * 4
    result = resumed.run()
    assert result.steps_done == 4

    changed = False
    for a, b, p0 in zip(straight.model.parameters(), resumed.model.parameters(), initial):
        assert torch.equal(a, b)
        changed |= not torch.equal(a, p0)
    assert changed, "training must have moved the weights for the comparison to mean anything"
    # metrics.jsonl of the resumed run holds every training step exactly once, in order (the first
    # invocation's steps 1-2, then the resumed 3-4: none lost, none repeated)
    rows = [json.loads(line) for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "time/step" in r] == [1, 2, 3, 4]


def test_resume_without_checkpoint_is_a_clear_error(tmp_path, policy):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Trainer(_cfg(tmp_path, "nothing"), resume=True)


KILLED_RUN = """
import sys
import conspo.rewards
from conspo.config import load_config
from conspo.trainer.config import TrainConfig
from conspo.trainer.loop import train
from trainer_support import ParityVerifier  # the tests folder is on PYTHONPATH (child_env)

conspo.rewards.reward_fn.MathVerifier = ParityVerifier
train(load_config(TrainConfig, None, sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "variant",
    [
        pytest.param([], id="full"),
        # LoRA: the checkpoint holds the adapter and its AdamW state; the base is reloaded from the folder.
        pytest.param(["model.lora.r=4", "optim.lr=5e-3"], id="lora"),
    ],
)
def test_sigkilled_run_resumes_to_the_same_weights(tmp_path, policy, variant):
    """A real kill: the training process gets SIGKILL once a checkpoint exists; --resume finishes the run."""
    import signal
    import subprocess
    import sys
    import time

    overrides = [
        *RUN,
        "steps=6",
        f"output_dir={tmp_path}",
        f"model.name_or_path={tmp_path / 'policy'}",
        *variant,
    ]
    straight = Trainer(load_config(TrainConfig, None, [*overrides, "run_name=straight"]))
    initial = [p.detach().clone() for p in straight.model.parameters()]
    straight.run()

    script = tmp_path / "killed.py"
    script.write_text(KILLED_RUN)
    proc = subprocess.Popen(
        [sys.executable, str(script), *overrides, "run_name=killed", "checkpoint.every=1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=child_env(),
    )
    run_dir = tmp_path / "killed"
    deadline = time.monotonic() + 240
    try:
        while latest_checkpoint(run_dir) is None or latest_checkpoint(run_dir).name < "checkpoint-000002":
            assert proc.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "no checkpoint appeared in time"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished

    resumed = Trainer(load_config(TrainConfig, None, [*overrides, "run_name=killed"]), resume=True)
    assert 2 <= resumed.step_index < 6
    resumed.run()
    if variant:
        assert (latest_checkpoint(run_dir) / "adapter_model.safetensors").is_file()
    changed = False
    for a, b, p0 in zip(straight.model.parameters(), resumed.model.parameters(), initial, strict=True):
        assert torch.equal(a, b)
        changed |= not torch.equal(a, p0)
    assert changed, "training must have moved the weights for the comparison to mean anything"
