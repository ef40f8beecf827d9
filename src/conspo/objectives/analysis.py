"""Analysis helpers: GRPO read as a weighted positive-negative score difference (Prop. 1, Lemma 1, Eq. 7)."""

from __future__ import annotations

import torch

from .batch import RolloutBatch
from .groups import group_index, score_gap
from .scores import clipped_ratio_score

__all__ = ["grpo_discriminative_form"]


@torch.no_grad()
def grpo_discriminative_form(batch: RolloutBatch, clip_eps: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 7 per group: sqrt(p(1-p)) * (mean_{i in P} s+_i - mean_{j in N} s-_j), with the Eq. 6 scores.

    p = N+ / (N+ + N-) is the group's empirical pass rate. Returns (values [num_groups], group ids
    [num_groups]) in ascending group-id order; invalid groups (no positive or no negative) give 0.
    Prop. 1: with binary rewards and the population std, this equals GRPO's per-group clipped surrogate
    (Eq. 2 without KL) exactly.
    """
    unique_ids = torch.unique(batch.group_ids)
    gi = group_index(batch.group_ids, batch.labels)
    scores = clipped_ratio_score(
        batch.token_logps, batch.old_token_logps, batch.mask, batch.labels == 1, clip_eps
    )
    pass_rate = gi.num_pos / gi.size.clamp(min=1)
    value = torch.sqrt(pass_rate * (1.0 - pass_rate)) * score_gap(scores, gi)
    return value, unique_ids
