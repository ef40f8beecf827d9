"""Group bookkeeping without Python loops: dense group index, positive/negative counts, segment reductions.

Every group statistic is a scatter (`index_add_` / `scatter_reduce`) over the dense index that
`torch.unique(return_inverse=True)` gives, so groups may have any size and appear in any order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = [
    "GroupIndex",
    "check_whole_groups",
    "group_index",
    "mean_over_valid",
    "score_gap",
    "segment_logsumexp",
    "segment_max",
    "segment_mean",
    "segment_sum",
]


def segment_sum(values: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """out[g] = sum of values[i] with index[i] == g (differentiable)."""
    out = values.new_zeros((num_segments, *values.shape[1:]))
    return out.index_add(0, index, values)


def segment_mean(values: torch.Tensor, index: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Per-segment mean of values; empty segments give 0."""
    return segment_sum(values, index, counts.shape[0]) / counts.clamp(min=1).to(values.dtype)


def segment_max(values: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Per-segment max; empty segments give -inf."""
    out = values.new_full((num_segments,), float("-inf"))
    return out.scatter_reduce(0, index, values, reduce="amax", include_self=True)


def segment_logsumexp(values: torch.Tensor, index: torch.Tensor, num_segments: int) -> torch.Tensor:
    """Per-segment log(sum(exp(values))), stable. Pass -inf to leave a row out.

    An empty segment gives a very negative finite value (log of the smallest normal float), never -inf,
    so no inf * 0 = NaN can reach a backward pass.
    """
    peak = segment_max(values.detach(), index, num_segments)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    shifted = torch.exp(values - peak[index])
    total = segment_sum(shifted, index, num_segments)
    return torch.log(total.clamp(min=torch.finfo(total.dtype).tiny)) + peak


@dataclass(frozen=True)
class GroupIndex:
    """Dense group structure of a batch. Rows with label -1 belong to no count."""

    inverse: torch.Tensor
    """[B] int64: dense group index of each row, in 0..num_groups-1."""
    num_groups: int
    """Number of distinct group ids (valid or not)."""
    size: torch.Tensor
    """[num_groups] float: labelled rows (positive or negative) per group (G_g)."""
    num_pos: torch.Tensor
    """[num_groups] float: positives per group (N+)."""
    num_neg: torch.Tensor
    """[num_groups] float: negatives per group (N-)."""
    valid: torch.Tensor
    """[num_groups] bool: the group has at least one positive and one negative."""
    is_pos: torch.Tensor
    """[B] bool: row is a positive of a valid group."""
    is_neg: torch.Tensor
    """[B] bool: row is a negative of a valid group."""

    @property
    def row_valid(self) -> torch.Tensor:
        """[B] bool: row is labelled and its group is valid."""
        return self.is_pos | self.is_neg

    @property
    def num_valid(self) -> torch.Tensor:
        """0-dim float: number of valid groups."""
        return self.valid.sum().float()

    def per_row(self, per_group: torch.Tensor) -> torch.Tensor:
        """Broadcast a [num_groups] tensor to rows."""
        return per_group[self.inverse]


def group_index(group_ids: torch.Tensor, labels: torch.Tensor) -> GroupIndex:
    """Dense group index and positive/negative counts from int64 group ids and labels (1 / 0 / -1)."""
    _, inverse = torch.unique(group_ids, return_inverse=True)
    num_groups = int(inverse.max()) + 1 if inverse.numel() else 0
    pos = (labels == 1).float()
    neg = (labels == 0).float()
    num_pos = segment_sum(pos, inverse, num_groups)
    num_neg = segment_sum(neg, inverse, num_groups)
    valid = (num_pos > 0) & (num_neg > 0)
    row_group_valid = valid[inverse]
    return GroupIndex(
        inverse=inverse,
        num_groups=num_groups,
        size=num_pos + num_neg,
        num_pos=num_pos,
        num_neg=num_neg,
        valid=valid,
        is_pos=(labels == 1) & row_group_valid,
        is_neg=(labels == 0) & row_group_valid,
    )


def score_gap(scores: torch.Tensor, gi: GroupIndex, margin: float = 0.0) -> torch.Tensor:
    """[num_groups]: mean_{i in P} (s_i - margin) - mean_{j in N} s_j per valid group, 0 for invalid ones.

    The one place the positive-minus-negative score gap is computed: the linear credit's objective (Table 6),
    DisCO-b, GRPO's discriminative form (Eq. 7) and the `scores/logprob_gap` metrics all read it.
    """
    pos = segment_sum(
        torch.where(gi.is_pos, scores - margin, torch.zeros_like(scores)), gi.inverse, gi.num_groups
    )
    neg = segment_sum(torch.where(gi.is_neg, scores, torch.zeros_like(scores)), gi.inverse, gi.num_groups)
    gap = pos / gi.num_pos.clamp(min=1) - neg / gi.num_neg.clamp(min=1)
    return torch.where(gi.valid, gap, torch.zeros_like(gap))


def mean_over_valid(per_group: torch.Tensor, gi: GroupIndex) -> torch.Tensor:
    """0-dim: the mean of a [num_groups] statistic over the valid groups (0 when there is none)."""
    return torch.where(gi.valid, per_group, torch.zeros_like(per_group)).sum() / gi.num_valid.clamp(min=1)


def check_whole_groups(group_ids: torch.Tensor, group_size: int) -> None:
    """Raise ValueError unless every group id occurs exactly `group_size` times.

    The coupled form of a group objective (ConSPO, DisCO) is exact only on whole groups; call this before
    using it on a micro-batch a framework assembled, rather than silently contrasting partial groups.
    """
    if group_size < 1:
        raise ValueError(f"check_whole_groups: group_size must be >= 1, got {group_size}")
    ids, counts = torch.unique(group_ids, return_counts=True)
    bad = (counts != group_size).nonzero().flatten()
    if bad.numel():
        first = int(bad[0])
        raise ValueError(
            f"group {int(ids[first])} has {int(counts[first])} rows in this batch, expected {group_size} "
            f"({bad.numel()} of {ids.numel()} groups are partial); use the decomposed form "
            "(objective.credit on the whole batch, then objective.loss per micro-batch)"
        )
