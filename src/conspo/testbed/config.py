"""Configuration of the testbed policy: the tiny model's shape and the warm start (no torch import here)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from conspo.testbed.tasks import make_task

__all__ = ["DEFAULT_STEPS", "DEFAULT_TESTBED", "TESTBED_FORMAT_VERSION", "TinyModelConfig", "WarmStartConfig"]

# Bump when the tokenizer, the model code or the teacher change in a way the configuration does not show:
# it is part of the cache key, so old cached policies are not reused by mistake.
TESTBED_FORMAT_VERSION = 2

# SFT steps that put each task's default-difficulty policy in the 30-60% band at temperature 1 (measured);
# varchain: in the 20-40% band (its longer chains need more steps to learn; measured 0.32 at 800 steps).
DEFAULT_STEPS = {"add": 300, "mul": 500, "chain": 300, "varchain": 800}


@dataclass(frozen=True)
class TinyModelConfig:
    """Shape of the tiny Llama policy (defaults give about 0.62M parameters)."""

    hidden_size: int = 128
    """Width of the residual stream."""
    num_layers: int = 3
    """Number of decoder blocks."""
    num_heads: int = 4
    """Attention heads (no grouped-query attention: key/value heads = heads)."""
    intermediate_size: int = 352
    """Width of the SwiGLU MLP."""
    max_positions: int = 128
    """Longest sequence (prompt + completion) the model is built for."""


@dataclass(frozen=True)
class WarmStartConfig:
    """Everything that determines the warm-started testbed policy (and its cache key)."""

    task: str = "add"
    """Testbed task (``add``, ``mul``, ``chain``); see ``conspo.testbed.tasks``."""
    difficulty: int | None = None
    """Task difficulty (None = the task's default: 2 digits for add/mul, 2 steps for chain)."""
    seed: int = 0
    """Seeds the problems, the model initialisation, the slips and the batch order."""
    model: TinyModelConfig = field(default_factory=TinyModelConfig)
    """Shape of the tiny Llama policy."""
    num_train_problems: int = 3000
    """Distinct training problems the teacher writes completions for."""
    slip_rate: float = 0.5
    """Share of teacher completions with a typical mistake; sets the base policy's accuracy (INFERRED 0.5)."""
    steps: int | None = None
    """Optimizer steps of supervised training (None = the task's own: ``DEFAULT_STEPS``; resolved on creation)."""
    batch_size: int = 64
    """Sequences per optimizer step."""
    learning_rate: float = 3e-3
    """Peak AdamW learning rate (linear warm-up over 5% of the steps, then cosine decay to 10%)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    template: str = "testbed"
    """Prompt template the policy is trained with (the trainer must render prompts with the same one)."""
    num_threads: int = 1
    """torch intra-op threads during the warm start. One: the matrices are tiny, so a second thread gains little
    on an idle machine and costs 10x or more on a busy one (OpenMP threads spin waiting for a core)."""
    eval_problems: int = 64
    """Held-out problems for the accuracy measurement written next to the policy."""
    eval_samples: int = 4
    """Completions per held-out problem (temperature 1)."""

    def __post_init__(self) -> None:
        from conspo.config import check_finite

        if isinstance(self.model, dict):  # from JSON / keyword arguments
            object.__setattr__(self, "model", TinyModelConfig(**self.model))
        check_finite(self)  # NaN passes the range checks below
        make_task(self.task, seed=self.seed, difficulty=self.difficulty)  # validates name and difficulty
        if self.steps is None:  # resolved here so that the cache key holds the number actually used
            object.__setattr__(self, "steps", DEFAULT_STEPS[self.task])
        if not 0.0 <= self.slip_rate < 1.0:
            raise ValueError(f"slip_rate must be in [0, 1), got {self.slip_rate}")
        for name in ("num_train_problems", "steps", "batch_size", "num_threads", "eval_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def cache_key(self) -> str:
        """First 16 hex digits of the SHA-256 of the configuration and ``TESTBED_FORMAT_VERSION``."""
        payload = json.dumps({"version": TESTBED_FORMAT_VERSION, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


DEFAULT_TESTBED = WarmStartConfig()
"""The configuration ``conspo train`` with no arguments uses (task, difficulty, template, policy)."""
