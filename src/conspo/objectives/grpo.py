"""Token-level clipped-surrogate baselines: GRPO (as the ConSPO paper defines it), Dr. GRPO, DAPO.

All three maximize the PPO clipped surrogate f(rho, A) = min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)
with group-relative advantages; they differ in the advantage and in how tokens are aggregated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from .base import RatioObjective, check_range
from .batch import RolloutBatch
from .groups import GroupIndex
from .registry import register_objective
from .scores import masked_fraction, masked_token_sum, token_log_ratio
from .surrogate import clipped_surrogate

__all__ = ["DAPO", "GRPO", "DrGRPO", "overlong_reward_penalty"]


@dataclass
class _ClippedTokenObjective(RatioObjective):
    """The PPO-clip family (GRPO, Dr. GRPO, DAPO) and its two optional bounds on negative-advantage tokens."""

    delta: float | None = field(
        default=None,
        metadata={
            "help": "two-sided clip (INTELLECT-2, TRL's `delta`): the unclipped ratio is capped at delta > 1 "
            "(use > 1 + eps_high); None: off."
        },
    )
    clip_ratio_c: float | None = field(
        default=None,
        metadata={
            "help": "dual-clip (verl's `clip_ratio_c`, verl default 3.0): for A < 0 the surrogate is at least "
            "c * A, c > 1; None: off."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.delta is not None:
            check_range(self.name, "delta", self.delta, low=1.0, low_open=True)
        if self.clip_ratio_c is not None:
            check_range(self.name, "clip_ratio_c", self.clip_ratio_c, low=1.0, low_open=True)

    def _eps(self) -> tuple[float, float]:
        raise NotImplementedError

    def surrogate(
        self, batch: RolloutBatch, advantages: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ratio = torch.exp(token_log_ratio(batch.token_logps, batch.old_token_logps))
        eps_low, eps_high = self._eps()
        value, is_clipped = clipped_surrogate(
            ratio, advantages[:, None], eps_low, eps_high, self.delta, self.clip_ratio_c
        )
        metrics = {
            "ratio/clip_frac": masked_fraction(is_clipped, batch.mask),
            "ratio/mean": masked_token_sum(ratio.detach(), batch.mask).sum()
            / batch.token_mask.sum().clamp(min=1),
        }
        return value, metrics


@register_objective("grpo")
@dataclass
class GRPO(_ClippedTokenObjective):
    """GRPO as the ConSPO paper defines it (Eq. 2-3), Shao et al. 2024.

    J = mean over valid groups of (1/G) sum_i (1/|o_i|) sum_t min(rho_{i,t} A_i, clip(rho_{i,t}, 1-eps, 1+eps) A_i)
        - beta * (same aggregation of the k3 KL to pi_ref),
    A_i = (r_i - mean r) / std r with the population std (divisor G). All-correct / all-wrong groups excluded.
    """

    clip_eps: float = field(
        default=0.2, metadata={"help": "epsilon of the clip (INFERRED 0.2; the paper omits it)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("grpo", "clip_eps", self.clip_eps, low=0.0, low_open=True)

    def _eps(self) -> tuple[float, float]:
        return self.clip_eps, self.clip_eps


@register_objective("dr_grpo")
@dataclass
class DrGRPO(_ClippedTokenObjective):
    """Dr. GRPO (Liu et al. 2025, "Understanding R1-Zero-Like Training", Eq. in Sec. 3.2).

    J = (1/G) sum_i (1/L_max) sum_t min(rho_{i,t} A_i, clip(rho_{i,t}, 1-eps, 1+eps) A_i), A_i = r_i - mean r
    (no std, no 1/|o_i|: the response-length and question-difficulty biases removed), averaged over valid groups.
    L_max is a constant: `max_length`, or the padded width T of the batch given to `credit` when None.
    """

    token_reduction: ClassVar[Literal["mean", "sum"]] = "sum"
    scale_by_std: ClassVar[bool] = False

    clip_eps: float = field(default=0.2, metadata={"help": "epsilon of the clip (Dr. GRPO keeps PPO's 0.2)."})
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "constant token normalizer L_max (the generation budget); None: the credit batch width T."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("dr_grpo", "clip_eps", self.clip_eps, low=0.0, low_open=True)
        if self.max_length is not None:
            check_range("dr_grpo", "max_length", self.max_length, low=1.0)

    def _eps(self) -> tuple[float, float]:
        return self.clip_eps, self.clip_eps

    def row_weight(self, batch: RolloutBatch, gi: GroupIndex) -> torch.Tensor:
        length = self.max_length if self.max_length is not None else max(batch.token_logps.shape[1], 1)
        return super().row_weight(batch, gi) / float(length)


@register_objective("dapo")
@dataclass
class DAPO(_ClippedTokenObjective):
    """DAPO (Yu et al. 2025, Eq. 8): clip-higher and a token-level policy-gradient loss.

    J = (1 / sum_i |o_i|) sum_i sum_t min(rho_{i,t} A_i, clip(rho_{i,t}, 1-eps_low, 1+eps_high) A_i),
    the token count taken over every valid group of the optimizer step. Dynamic sampling (refilling
    dropped groups) is the trainer's job; overlong reward shaping is `overlong_reward_penalty`.
    """

    normalize_by: ClassVar[Literal["groups", "tokens"]] = "tokens"
    token_reduction: ClassVar[Literal["mean", "sum"]] = "sum"

    eps_low: float = field(default=0.2, metadata={"help": "lower clip epsilon (DAPO: 0.2)."})
    eps_high: float = field(default=0.28, metadata={"help": "upper clip epsilon, clip-higher (DAPO: 0.28)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("dapo", "eps_low", self.eps_low, low=0.0, high=1.0, low_open=True, high_open=True)
        check_range("dapo", "eps_high", self.eps_high, low=0.0, low_open=True)

    def _eps(self) -> tuple[float, float]:
        return self.eps_low, self.eps_high


def overlong_reward_penalty(
    lengths: torch.Tensor, max_length: int = 20480, cache_length: int = 4096
) -> torch.Tensor:
    """DAPO's soft overlong punishment (Eq. 13 of the DAPO paper), added to the reward.

    0 while |o| <= L_max - L_cache, then falls linearly to -1 at |o| = L_max, and -1 beyond.
    Defaults are DAPO's (L_max = 20480, L_cache = 4096).
    """
    if cache_length <= 0 or max_length <= cache_length:
        raise ValueError(
            f"overlong_reward_penalty: need 0 < cache_length < max_length, got {cache_length}, {max_length}"
        )
    lengths = lengths.float()
    start = max_length - cache_length
    return ((start - lengths) / cache_length).clamp(min=-1.0, max=0.0)
