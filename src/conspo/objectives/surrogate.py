"""PPO's clipped surrogate (Eq. 3 of the ConSPO paper), shared by the token-level (GRPO, Dr. GRPO, DAPO) and
sequence-level (GSPO) ratio objectives. A leaf module: it imports torch only, so no objective imports another.
"""

from __future__ import annotations

import torch

__all__ = ["clipped_surrogate"]


def clipped_surrogate(
    ratio: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float,
    eps_high: float,
    delta: float | None = None,
    clip_ratio_c: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's f(rho, A) = min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A) (Eq. 3) and the clipped-token flags.

    `delta` (two-sided GRPO, INTELLECT-2; TRL's `delta`): the unclipped branch uses min(rho, delta), so
    f = min(min(rho, delta) A, clip(rho) A) and a negative-advantage token's ratio is capped at delta.
    `clip_ratio_c` (dual-clip PPO, Ye et al. 2020; verl's `clip_ratio_c`): where A < 0, f = max(f, c A).
    `advantages` broadcasts against `ratio` ([B, 1] against [B, T], or [B] against [B]).
    """
    clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
    unclipped = ratio if delta is None else ratio.clamp(max=delta)
    value = torch.minimum(unclipped * advantages, clipped * advantages)
    negative = advantages < 0
    is_clipped = ((ratio > 1.0 + eps_high) & (advantages > 0)) | ((ratio < 1.0 - eps_low) & negative)
    if delta is not None:
        is_clipped = is_clipped | (negative & (ratio > delta))
    if clip_ratio_c is not None:
        value = torch.where(negative, torch.maximum(value, clip_ratio_c * advantages), value)
        is_clipped = is_clipped | (negative & (ratio > clip_ratio_c))
    return value, is_clipped
