"""What the trainer tests share: small-run overrides, a stand-in verifier, the policy and trainer builders.

The tests folder is on ``sys.path`` under pytest, so ``from trainer_support import ...`` works in a test; a
script a test runs in a child process imports it too when started with :func:`child_env`.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

from conspo.config import load_config
from conspo.rewards import Verdict
from conspo.trainer.config import TrainConfig
from conspo.trainer.loop import Trainer

TESTS_DIR = Path(__file__).resolve().parent

# No TensorBoard, progress bar, plot or best checkpoint, and one thread: every trainer test run.
QUIET = [
    "logging.tensorboard=false",
    "logging.progress=false",
    "logging.plot=false",
    "checkpoint.save_best=false",
    "num_threads=1",
]

# One small step: 4 prompts x 4 samples of at most 16 tokens; 4 evaluation problems, one sample each.
SMALL = [
    "batch.prompts_per_step=4",
    "batch.group_size=4",
    "rollout.max_new_tokens=16",
    "eval.max_problems=4",
    "eval.samples=1",
    *QUIET,
]


class StandInVerifier:
    """What the trainer needs of a ``MathVerifier`` but ``verify_batch``: no worker processes to start or stop."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def close(self):
        pass

    def verify_batch(self, completions, answers):
        raise NotImplementedError


class ParityVerifier(StandInVerifier):
    """A completion is correct when its length is even: deterministic, mixed groups from any policy."""

    def verify_batch(self, completions, answers):
        return [
            Verdict(reward=float(len(c) % 2 == 0), correct=len(c) % 2 == 0, extracted=None, reason="exact")
            for c in completions
        ]


def save_random_policy(folder: Path) -> Path:
    """A randomly initialised tiny Llama (seed 0) and the testbed's tokenizer, saved to ``folder``."""
    from conspo.testbed import build_char_tokenizer, build_tiny_model

    tokenizer = build_char_tokenizer()
    build_tiny_model(tokenizer, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_config(
    output_dir: Path,
    *overrides: str,
    policy: Path | None = None,
    run_name: str = "t",
    base: list[str] = SMALL,
    config_file: Path | None = None,
) -> TrainConfig:
    """``base``, then the run folder ``output_dir/run_name`` and the policy (when given), then ``overrides``."""
    model = [f"model.name_or_path={policy}"] if policy is not None else []
    return load_config(
        TrainConfig,
        config_file,
        [*base, f"output_dir={output_dir}", f"run_name={run_name}", *model, *overrides],
    )


def make_trainer(
    output_dir: Path, policy: Path, *overrides: str, run_name: str = "t", base: list[str] = SMALL
) -> Trainer:
    """A :class:`Trainer` on :func:`train_config`."""
    return Trainer(train_config(output_dir, *overrides, policy=policy, run_name=run_name, base=base))


def child_env(**extra: str) -> dict[str, str]:
    """``os.environ`` and ``extra``, with the tests folder first on ``PYTHONPATH`` (for a child script)."""
    path = os.pathsep.join(p for p in (str(TESTS_DIR), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, **extra, "PYTHONPATH": path}


def assert_beats_lr0_control(
    output_dir: Path, label: str, base: list[str], seeds, *overrides: str, mean_gain: float = 0.08
) -> list[float]:
    """Train one run per seed; each must end above its own lr=0 control, and the mean gain reach ``mean_gain``.

    A run's control is its own ``eval_before``: evaluation draws are seeded per sample, not per model or
    step, so a policy that never moves scores the same before and after (the learning tests check that too).
    Returns the per-seed gains.
    """
    from conspo.trainer.loop import train

    gains = []
    for seed in seeds:
        cfg = train_config(output_dir, *overrides, f"seed={seed}", run_name=f"{label}-{seed}", base=base)
        result = train(cfg)
        assert result.eval_before is not None and result.eval_after is not None
        gains.append(result.eval_after - result.eval_before)
    detail = f"{label}: gains over the lr=0 control per seed {[round(g, 3) for g in gains]}"
    print(detail)  # shown with -rP: the margin this machine measured
    assert min(gains) > 0, detail
    assert statistics.fmean(gains) >= mean_gain, detail
    return gains
