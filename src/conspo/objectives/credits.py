"""Credits: how hard each rollout's score is pushed, c_i = dJ/ds_i: GRPO's (Lemma 1, its advantages) and
the exact autograd credit of any group objective. ConSPO's own (Lemma 2, Eq. 13) lives beside its objective
in `conspo.py`.

Every function is vectorized over groups and leaves rows of invalid groups (no positive or no negative)
and rows labelled -1 at zero. Scores and rewards are float [B], labels int [B] (1 / 0 / -1), group ids int64 [B].
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .groups import GroupIndex, group_index, segment_sum
from .scores import at_least_fp32

__all__ = [
    "autograd_credit",
    "grpo_advantages",
    "grpo_credit",
]


def _groups(labels: torch.Tensor, group_ids: torch.Tensor, groups: GroupIndex | None) -> GroupIndex:
    return group_index(group_ids, labels) if groups is None else groups


def grpo_advantages(
    rewards: torch.Tensor,
    labels: torch.Tensor,
    group_ids: torch.Tensor,
    scale_by_std: bool = True,
    groups: GroupIndex | None = None,
) -> torch.Tensor:
    """Group-relative advantages A_i = (r_i - mean_g r) / std_g r, population std (divisor G) as in Sec. 3.

    `scale_by_std=False` gives Dr. GRPO's A_i = r_i - mean_g r. Statistics use the labelled rows of each
    group; rows of invalid groups (all-correct / all-wrong) and rows labelled -1 get 0. A valid group whose
    rewards are all equal (possible only with explicit labels) also gets 0 rather than a division by zero.
    """
    gi = _groups(labels, group_ids, groups)
    rewards = at_least_fp32(rewards.detach())
    labelled = (labels >= 0).float()
    mean = segment_sum(rewards * labelled, gi.inverse, gi.num_groups) / gi.size.clamp(min=1)
    centered = rewards - mean[gi.inverse]
    adv = centered
    if scale_by_std:
        var = segment_sum(centered.square() * labelled, gi.inverse, gi.num_groups) / gi.size.clamp(min=1)
        std = var.sqrt()[gi.inverse]
        adv = torch.where(
            std > 0, centered / std.clamp(min=torch.finfo(std.dtype).tiny), torch.zeros_like(std)
        )
    return torch.where(gi.row_valid, adv, torch.zeros_like(adv))


def grpo_credit(
    labels: torch.Tensor, group_ids: torch.Tensor, groups: GroupIndex | None = None
) -> torch.Tensor:
    """Lemma 1: GRPO's constant-per-sign credit, +sqrt(p(1-p))/N+ on positives, -sqrt(p(1-p))/N- on negatives.

    p = N+ / (N+ + N-) is the group's empirical pass rate.
    """
    gi = _groups(labels, group_ids, groups)
    pass_rate = gi.num_pos / gi.size.clamp(min=1)
    weight = torch.sqrt(pass_rate * (1.0 - pass_rate))
    pos = (weight / gi.num_pos.clamp(min=1))[gi.inverse]
    neg = -(weight / gi.num_neg.clamp(min=1))[gi.inverse]
    zero = torch.zeros_like(pos)
    return torch.where(gi.is_pos, pos, torch.where(gi.is_neg, neg, zero))


def autograd_credit(
    group_objective: Callable[[torch.Tensor], torch.Tensor], scores: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact decomposed coefficients of ANY sequence-score objective: c = dJ/ds with J = sum_g J_g(s).

    `group_objective(scores) -> [num_groups]` must be differentiable in its argument. Returns the detached
    (coef [B], per-group objective [num_groups]). This is how ConSPO's ablations and DisCO decompose.
    """
    with torch.enable_grad():
        s = at_least_fp32(scores.detach()).requires_grad_(True)
        per_group = group_objective(s)
        (coef,) = torch.autograd.grad(per_group.sum(), s, allow_unused=True)
    if coef is None:
        coef = torch.zeros_like(s)
    return coef.detach(), per_group.detach()
