"""Baselines that soften PPO's hard clip: CISPO (clipped, detached IS weight) and SAPO (sigmoid gate)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from .base import RatioObjective, check_range
from .batch import RolloutBatch
from .registry import register_objective
from .scores import at_least_fp32, masked_fraction, token_log_ratio

__all__ = ["CISPO", "SAPO"]


@register_objective("cispo")
@dataclass
class CISPO(RatioObjective):
    """CISPO (MiniMax-M1, 2025, Eq. 4-5): clip the importance weight, not the update.

    J = (1 / sum_i |o_i|) sum_i sum_t sg(clip(rho_{i,t}, 1 - eps_low, 1 + eps_high)) A_i log pi_theta(o_{i,t}),
    token-level aggregation over every valid group (as DAPO). Every token keeps a gradient; the detached
    weight only bounds its size. MiniMax-M1 sets no lower bound (eps_low=None).
    """

    normalize_by: ClassVar[Literal["groups", "tokens"]] = "tokens"
    token_reduction: ClassVar[Literal["mean", "sum"]] = "sum"

    eps_high: float = field(
        default=4.0,
        metadata={
            "help": "upper IS-weight clip, weight <= 1 + eps_high (INFERRED 4.0, i.e. ScaleRL's cap of 5)."
        },
    )
    eps_low: float | None = field(
        default=None,
        metadata={"help": "lower IS-weight clip, weight >= 1 - eps_low; None: no lower bound (MiniMax-M1)."},
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("cispo", "eps_high", self.eps_high, low=0.0, low_open=True)
        if self.eps_low is not None:
            check_range("cispo", "eps_low", self.eps_low, low=0.0, high=1.0, low_open=True)

    def surrogate(
        self, batch: RolloutBatch, advantages: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ratio = torch.exp(token_log_ratio(batch.token_logps, batch.old_token_logps)).detach()
        low = None if self.eps_low is None else 1.0 - self.eps_low
        weight = ratio.clamp(min=low, max=1.0 + self.eps_high)
        is_clipped = ratio > 1.0 + self.eps_high
        if low is not None:
            is_clipped = is_clipped | (ratio < low)
        logp = at_least_fp32(batch.token_logps)
        value = weight * advantages[:, None] * torch.where(batch.token_mask, logp, torch.zeros_like(logp))
        metrics = {
            "ratio/clip_frac": masked_fraction(is_clipped, batch.mask),
            "ratio/mean": (ratio * batch.token_mask).sum() / batch.token_mask.sum().clamp(min=1),
        }
        return value, metrics


@register_objective("sapo")
@dataclass
class SAPO(RatioObjective):
    """SAPO (Gao et al. 2025, "Soft Adaptive Policy Optimization", Eq. 5-6): a smooth gate instead of a clip.

    J = mean over valid groups of (1/G) sum_i (1/|o_i|) sum_t g(rho_{i,t}) A_i,
    g(rho) = sigmoid(t (rho - 1)) * 4 / t with t = tau_pos if A_i > 0 else tau_neg. At rho = 1 the gate's
    gradient equals the unclipped one; far from 1 it fades smoothly. Negative tokens are damped faster.
    """

    tau_pos: float = field(default=1.0, metadata={"help": "gate temperature for A > 0 (SAPO: 1.0)."})
    tau_neg: float = field(default=1.05, metadata={"help": "gate temperature for A <= 0 (SAPO: 1.05)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("sapo", "tau_pos", self.tau_pos, low=0.0, low_open=True)
        check_range("sapo", "tau_neg", self.tau_neg, low=0.0, low_open=True)

    def surrogate(
        self, batch: RolloutBatch, advantages: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ratio = torch.exp(token_log_ratio(batch.token_logps, batch.old_token_logps))
        temp = torch.where(advantages > 0, self.tau_pos, self.tau_neg)[:, None]
        sig = torch.sigmoid(temp * (ratio - 1.0))
        gate = sig * (4.0 / temp)
        # "Clipped" here: the gate's slope 4 sig (1 - sig) has fallen below half its value at rho = 1.
        sig = sig.detach()
        metrics = {
            "ratio/clip_frac": masked_fraction(4.0 * sig * (1.0 - sig) < 0.5, batch.mask),
            "ratio/mean": (ratio.detach() * batch.token_mask).sum() / batch.token_mask.sum().clamp(min=1),
        }
        return gate * advantages[:, None], metrics
