"""Sequence-level importance-ratio baselines: GSPO and GMPO (one ratio per rollout, a geometric mean of tokens)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .base import RatioObjective, check_range
from .batch import RolloutBatch
from .registry import register_objective
from .scores import masked_fraction, masked_token_mean, token_log_ratio
from .surrogate import clipped_surrogate

__all__ = ["GMPO", "GSPO"]


@register_objective("gspo")
@dataclass
class GSPO(RatioObjective):
    """GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", Eq. 5-7).

    s_i(theta) = (pi_theta(o_i) / pi_old(o_i))^(1/|o_i|) = exp((1/|o_i|) sum_t log rho_{i,t}),
    J = mean over valid groups of (1/G) sum_i min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i),
    with GRPO's group-normalized advantages. The sequence ratio is clipped as a whole; GSPO's ranges are tiny.
    """

    eps_low: float = field(default=3e-4, metadata={"help": "lower clip of the sequence ratio (GSPO: 3e-4)."})
    eps_high: float = field(default=4e-4, metadata={"help": "upper clip of the sequence ratio (GSPO: 4e-4)."})

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("gspo", "eps_low", self.eps_low, low=0.0, high=1.0, low_open=True, high_open=True)
        check_range("gspo", "eps_high", self.eps_high, low=0.0, low_open=True)

    def surrogate(
        self, batch: RolloutBatch, advantages: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        log_seq_ratio = masked_token_mean(
            token_log_ratio(batch.token_logps, batch.old_token_logps), batch.mask
        )
        seq_ratio = torch.exp(log_seq_ratio)
        value, is_clipped = clipped_surrogate(seq_ratio, advantages, self.eps_low, self.eps_high)
        metrics = {
            "ratio/clip_frac": is_clipped.float().mean().detach() if value.numel() else value.new_zeros(()),
            "ratio/mean": seq_ratio.detach().mean() if value.numel() else value.new_zeros(()),
        }
        return value, metrics


@register_objective("gmpo")
@dataclass
class GMPO(RatioObjective):
    """GMPO (Zhao et al. 2025, "Geometric-Mean Policy Optimization", Eq. 4).

    J = mean over valid groups of (1/G) sum_i sgn(A_i) |A_i| * prod_t min(rho_{i,t} sgn(A_i), clip(rho_{i,t},
    e^-eps_low, e^eps_high) sgn(A_i))^(1/|o_i|) sgn(A_i): token ratios clipped one-sidedly by the sign of
    the advantage, in log space, then combined by a geometric mean (exp of the token-mean log-ratio).
    """

    eps_low: float = field(
        default=0.4, metadata={"help": "log-space lower clip: ratio >= exp(-eps_low) (GMPO: 0.4)."}
    )
    eps_high: float = field(
        default=0.4, metadata={"help": "log-space upper clip: ratio <= exp(eps_high) (GMPO: 0.4)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("gmpo", "eps_low", self.eps_low, low=0.0, low_open=True)
        check_range("gmpo", "eps_high", self.eps_high, low=0.0, low_open=True)

    def surrogate(
        self, batch: RolloutBatch, advantages: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        log_ratio = token_log_ratio(batch.token_logps, batch.old_token_logps)
        bounded = log_ratio.clamp(-self.eps_low, self.eps_high)
        positive = (advantages > 0)[:, None]
        # PPO's pessimistic min, in log space: cap the ratio from above when A > 0, from below when A < 0.
        clipped = torch.where(positive, torch.minimum(log_ratio, bounded), torch.maximum(log_ratio, bounded))
        seq_ratio = torch.exp(masked_token_mean(clipped, batch.mask))
        is_clipped = (positive & (log_ratio > self.eps_high)) | (~positive & (log_ratio < -self.eps_low))
        metrics = {
            "ratio/clip_frac": masked_fraction(is_clipped, batch.mask),
            "ratio/mean": seq_ratio.detach().mean() if seq_ratio.numel() else seq_ratio.new_zeros(()),
        }
        return seq_ratio * advantages, metrics
