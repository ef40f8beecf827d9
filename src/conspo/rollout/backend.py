"""What a generation backend takes and returns: :class:`SamplingParams`, :class:`Rollout`, :class:`GenerationBackend`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["GenerationBackend", "Rollout", "SamplingParams"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample completions. ``temperature == 0`` means greedy decoding."""

    temperature: float = field(
        default=1.0,
        metadata={
            "help": "Softmax temperature; 0 = greedy. The paper samples rollouts at 1.0 and evaluates at 0.6."
        },
    )
    top_p: float = field(
        default=1.0,
        metadata={"help": "Nucleus sampling mass in (0, 1]; 1.0 disables it. The paper evaluates with 0.95."},
    )
    max_new_tokens: int = field(
        default=1024,
        metadata={"help": "Most tokens generated per completion; hitting it without EOS flags `truncated`."},
    )
    seed: int | None = field(
        default=None,
        metadata={
            "help": "Seed the torch RNG for this call (restored afterwards); None uses the global RNG as it is."
        },
    )

    def __post_init__(self) -> None:
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)):
            raise ValueError(f"SamplingParams.temperature must be a finite number, got {self.temperature!r}")
        if self.temperature < 0:
            raise ValueError(f"SamplingParams.temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not (isinstance(self.top_p, (int, float)) and 0.0 < self.top_p <= 1.0):
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int):
            raise ValueError(f"SamplingParams.max_new_tokens must be an int, got {self.max_new_tokens!r}")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingParams.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"SamplingParams.seed must be an int or None, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        """True when decoding is greedy (temperature 0)."""
        return self.temperature == 0

    def to_dict(self) -> dict[str, float | int | None]:
        """Plain dict, e.g. for cache keys and reports."""
        return {
            "temperature": float(self.temperature),
            "top_p": float(self.top_p),
            "max_new_tokens": self.max_new_tokens,
            "seed": self.seed,
        }


@dataclass
class Rollout:
    """One sampled completion of one prompt.

    ``completion_ids`` are exactly the tokens the policy produced: padding is removed, and an EOS the
    policy emitted is KEPT as the last id (its log-probability is part of the sequence's likelihood, so
    the trainer must score it). ``text`` is the decoded completion without that EOS or other special
    tokens. ``truncated`` is True when ``max_new_tokens`` was reached without an EOS.
    """

    prompt_index: int
    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    truncated: bool

    @property
    def num_completion_tokens(self) -> int:
        """Length of the completion in tokens, EOS included when emitted."""
        return len(self.completion_ids)


@runtime_checkable
class GenerationBackend(Protocol):
    """Anything that samples ``n`` completions per prompt.

    Contract: ``len(result) == len(prompts) * n`` and prompt ``i``'s samples are ``result[i*n:(i+1)*n]``,
    each with ``prompt_index == i``. A faster engine (vLLM, SGLang) only has to implement this method.
    """

    def generate(self, prompts: list[str], n: int, params: SamplingParams) -> list[Rollout]: ...
