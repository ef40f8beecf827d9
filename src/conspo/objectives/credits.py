"""Credits: how hard each rollout's score is pushed, c_i = dJ/ds_i (Lemma 1, Lemma 2), and GRPO advantages.

Every function is vectorized over groups and leaves rows of invalid groups (no positive or no negative)
and rows labelled -1 at zero. Scores and rewards are float [B], labels int [B] (1 / 0 / -1), group ids int64 [B].
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .groups import GroupIndex, group_index, segment_logsumexp, segment_mean, segment_sum
from .scores import at_least_fp32

__all__ = [
    "autograd_credit",
    "grpo_advantages",
    "grpo_credit",
    "infonce_credit",
    "infonce_objective",
    "linear_credit",
    "linear_objective",
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


def linear_credit(
    labels: torch.Tensor, group_ids: torch.Tensor, groups: GroupIndex | None = None
) -> torch.Tensor:
    """Credit of the linear positive-negative difference J = mean s+ - mean s- (Table 6 ablation): +1/N+, -1/N-."""
    gi = _groups(labels, group_ids, groups)
    pos = (1.0 / gi.num_pos.clamp(min=1))[gi.inverse]
    neg = -(1.0 / gi.num_neg.clamp(min=1))[gi.inverse]
    zero = torch.zeros_like(pos)
    return torch.where(gi.is_pos, pos, torch.where(gi.is_neg, neg, zero))


def linear_objective(scores: torch.Tensor, gi: GroupIndex, margin: float = 0.0) -> torch.Tensor:
    """Per-group J_g = mean_{i in P} (s_i - m) - mean_{j in N} s_j, 0 for invalid groups ([num_groups])."""
    zero = torch.zeros_like(scores)
    pos_mean = segment_mean(torch.where(gi.is_pos, scores - margin, zero), gi.inverse, gi.num_pos)
    neg_mean = segment_mean(torch.where(gi.is_neg, scores, zero), gi.inverse, gi.num_neg)
    return torch.where(gi.valid, pos_mean - neg_mean, torch.zeros_like(pos_mean))


def _infonce_terms(
    scores: torch.Tensor, gi: GroupIndex, tau: float, margin: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pos_logit [B], lse_neg [num_groups], log_z [B]) of Eq. 13, every entry finite."""
    neg_logit = torch.where(gi.is_neg, scores / tau, torch.full_like(scores, float("-inf")))
    lse_neg = segment_logsumexp(neg_logit, gi.inverse, gi.num_groups)
    # Groups without negatives are invalid; give them a finite stand-in so no inf/NaN reaches autograd.
    lse_neg = torch.where(gi.valid, lse_neg, torch.zeros_like(lse_neg))
    pos_logit = (scores - margin) / tau
    log_z = torch.logaddexp(pos_logit, lse_neg[gi.inverse])
    return pos_logit, lse_neg, log_z


def infonce_objective(
    scores: torch.Tensor, gi: GroupIndex, tau: float = 10.0, margin: float = 0.0
) -> torch.Tensor:
    """ConSPO's per-group objective (Eq. 8, with the margin inside as Eq. 13), [num_groups], 0 if invalid.

    J_g = (1/N+) sum_{i in P} tau * log[ exp((s_i - m)/tau) / (exp((s_i - m)/tau) + sum_{j in N} exp(s_j/tau)) ].
    Each positive's softmax holds only itself and the group's negatives. Differentiable in `scores`.
    """
    pos_logit, _, log_z = _infonce_terms(scores, gi, tau, margin)
    term = torch.where(gi.is_pos, tau * (pos_logit - log_z), torch.zeros_like(scores))
    return segment_sum(term, gi.inverse, gi.num_groups) / gi.num_pos.clamp(min=1)


@torch.no_grad()
def infonce_credit(
    scores: torch.Tensor,
    labels: torch.Tensor,
    group_ids: torch.Tensor,
    tau: float = 10.0,
    margin: float = 0.0,
    groups: GroupIndex | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Lemma 2: the analytic coefficients c_i = dJ/ds_i of Eq. 13 (Eq. 10), detached, float [B].

    c_i = (1/N+)(1 - P_i+) for a positive, c_j = -(1/N+) sum_i P_ij- for a negative, 0 elsewhere.
    They sum to zero per group (Eq. 11) and two negatives' coefficients differ by exp((s_j - s_k)/tau) (Eq. 12).

    Returns (coef, diagnostics) with diagnostics `p_pos` [B] (P_i+ on positives, 0 elsewhere),
    `neg_mass` [B] (sum_i P_ij- on negatives) and `objective` [num_groups] (J_g, 0 for invalid groups).
    """
    gi = _groups(labels, group_ids, groups)
    scores = at_least_fp32(scores.detach())
    pos_logit, lse_neg, log_z = _infonce_terms(scores, gi, tau, margin)
    zero = torch.zeros_like(scores)
    # 1 - P_i+ = sum_j exp(s_j/tau) / Z_i, computed directly: no cancellation when P_i+ is near 1.
    one_minus_p = torch.where(gi.is_pos, torch.exp(lse_neg[gi.inverse] - log_z), zero)
    p_pos = torch.where(gi.is_pos, torch.exp(pos_logit - log_z), zero)
    total = segment_sum(one_minus_p, gi.inverse, gi.num_groups)  # sum_i (1 - P_i+) per group
    # sum_i P_ij- = softmax over the group's negatives of s_j/tau, times sum_i (1 - P_i+).
    neg_share = torch.where(gi.is_neg, torch.exp(scores / tau - lse_neg[gi.inverse]), zero)
    neg_mass = neg_share * total[gi.inverse]
    inv_pos = (1.0 / gi.num_pos.clamp(min=1))[gi.inverse]
    coef = torch.where(gi.is_pos, one_minus_p * inv_pos, -neg_mass * inv_pos)
    objective = segment_sum(
        torch.where(gi.is_pos, tau * (pos_logit - log_z), zero), gi.inverse, gi.num_groups
    ) / gi.num_pos.clamp(min=1)
    return coef, {"p_pos": p_pos, "neg_mass": neg_mass, "objective": objective}


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
