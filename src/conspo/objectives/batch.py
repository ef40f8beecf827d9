"""The containers every objective reads and returns: `RolloutBatch`, `Credit`, `LossOutput`.

Shapes: B rollouts (rows), T response-token positions (padded). Row i belongs to group `group_ids[i]`
(one prompt, G sampled rollouts); groups may have any size and appear in any order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

__all__ = ["Credit", "LossOutput", "RolloutBatch", "RowIndex", "select_rows"]

RowIndex = torch.Tensor | slice | list[int] | range
"""Rows to keep: int64 indices, a bool mask [B], a slice, or a list/range of ints."""


def _as_index(idx: RowIndex, num_rows: int, device: torch.device) -> torch.Tensor | slice:
    if isinstance(idx, slice):
        return idx
    if isinstance(idx, torch.Tensor):
        if idx.dtype == torch.bool:
            if idx.shape != (num_rows,):
                raise ValueError(f"row mask must have shape ({num_rows},), got {tuple(idx.shape)}")
            return idx.to(device)
        if idx.dtype.is_floating_point or idx.dtype.is_complex:
            raise TypeError(f"row indices must be integers or a bool mask, got dtype {idx.dtype}")
        return idx.to(device=device, dtype=torch.long)
    return torch.as_tensor(list(idx), dtype=torch.long, device=device)


def select_rows(tensor: torch.Tensor | None, index: torch.Tensor | slice) -> torch.Tensor | None:
    """Row selection that passes None through."""
    return None if tensor is None else tensor[index]


@dataclass
class RolloutBatch:
    """Rollouts of one optimizer step (or a micro-batch of it), one row per sampled response.

    Validated on construction: shapes, dtypes and devices must agree, otherwise a ValueError/TypeError
    names the offending field. Integer group ids are stored as int64 and integer rewards as float32.
    """

    token_logps: torch.Tensor
    """[B, T] float: log pi_theta(o_t | q, o_<t) of each response token (with grad when training)."""
    mask: torch.Tensor
    """[B, T] bool or float: 1 marks a real response token, 0 prompt or padding."""
    group_ids: torch.Tensor
    """[B] integer: which prompt (group) the row was sampled for; any values, any order."""
    rewards: torch.Tensor
    """[B] float: the verifier's reward."""
    labels: torch.Tensor | None = None
    """[B] integer: 1 positive, 0 negative, -1 invalid (excluded everywhere). None: rewards > 0.5."""
    old_token_logps: torch.Tensor | None = None
    """[B, T] log-probs under the sampling policy; ratio objectives only. None: on-policy (= current, detached)."""
    ref_token_logps: torch.Tensor | None = None
    """[B, T] log-probs under the reference policy; needed only when an objective's `kl_coef` > 0."""

    def __post_init__(self) -> None:
        lp = self.token_logps
        if not isinstance(lp, torch.Tensor):
            raise TypeError(f"RolloutBatch.token_logps must be a torch.Tensor, got {type(lp).__name__}")
        if lp.dim() != 2:
            raise ValueError(f"RolloutBatch.token_logps must be [B, T], got shape {tuple(lp.shape)}")
        if not lp.dtype.is_floating_point:
            raise TypeError(f"RolloutBatch.token_logps must be floating point, got {lp.dtype}")
        num_rows = lp.shape[0]
        for name in ("mask", "old_token_logps", "ref_token_logps"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"RolloutBatch.{name} must be a torch.Tensor, got {type(value).__name__}")
            if value.shape != lp.shape:
                raise ValueError(
                    f"RolloutBatch.{name} has shape {tuple(value.shape)}, expected {tuple(lp.shape)} "
                    "(same as token_logps)"
                )
            if name != "mask" and not value.dtype.is_floating_point:
                raise TypeError(f"RolloutBatch.{name} must be floating point, got {value.dtype}")
            if value.device != lp.device:
                raise ValueError(f"RolloutBatch.{name} is on {value.device}, token_logps on {lp.device}")
        for name in ("group_ids", "rewards", "labels"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"RolloutBatch.{name} must be a torch.Tensor, got {type(value).__name__}")
            if value.shape != (num_rows,):
                raise ValueError(
                    f"RolloutBatch.{name} has shape {tuple(value.shape)}, expected ({num_rows},) "
                    "(one value per row of token_logps)"
                )
            if value.device != lp.device:
                raise ValueError(f"RolloutBatch.{name} is on {value.device}, token_logps on {lp.device}")
        if self.group_ids.dtype.is_floating_point or self.group_ids.dtype == torch.bool:
            raise TypeError(f"RolloutBatch.group_ids must be an integer tensor, got {self.group_ids.dtype}")
        self.group_ids = self.group_ids.long()
        if self.rewards.dtype == torch.bool or not self.rewards.dtype.is_floating_point:
            self.rewards = self.rewards.float()
        if self.labels is None:
            self.labels = (self.rewards > 0.5).long()
        else:
            if self.labels.dtype.is_floating_point:
                raise TypeError(f"RolloutBatch.labels must be an integer tensor, got {self.labels.dtype}")
            self.labels = self.labels.long()
            bad = (self.labels < -1) | (self.labels > 1)
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                raise ValueError(
                    f"RolloutBatch.labels must be 1 (positive), 0 (negative) or -1 (invalid); "
                    f"row {row} has {int(self.labels[row])}"
                )

    @property
    def num_rows(self) -> int:
        return self.token_logps.shape[0]

    @property
    def token_mask(self) -> torch.Tensor:
        """The response mask as bool [B, T]."""
        return self.mask if self.mask.dtype == torch.bool else self.mask != 0

    def select(self, idx: RowIndex) -> RolloutBatch:
        """The rows `idx` (indices, bool mask or slice) as a new batch; autograd flows through."""
        index = _as_index(idx, self.num_rows, self.token_logps.device)
        return RolloutBatch(**{f.name: select_rows(getattr(self, f.name), index) for f in fields(self)})

    def detach(self) -> RolloutBatch:
        """The same rows with every tensor detached (what `Objective.credit` needs)."""
        return RolloutBatch(
            **{
                f.name: (v.detach() if isinstance(v := getattr(self, f.name), torch.Tensor) else v)
                for f in fields(self)
            }
        )


@dataclass
class LossOutput:
    """A scalar loss to minimize and its metrics (0-dim detached tensors, namespaced keys)."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class Credit:
    """Group-aware, no-grad per-row quantities for the decomposed form of an objective.

    `rows` holds per-row tensors [B] (e.g. ConSPO's Lemma-2 coefficients `coef`, GRPO's `advantages`,
    aggregation `weight`s); they are read as attributes (`credit.coef`). `normalizer` holds global counts
    (0-dim float tensors: `groups`, `sequences`, `tokens` of the valid groups, or of every row when the
    objective's `normalize_over` is "all") that a distributed trainer
    sums across processes before calling `Objective.loss`. `metrics` are batch-level diagnostics.
    """

    rows: dict[str, torch.Tensor]
    normalizer: dict[str, torch.Tensor]
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        rows = self.__dict__.get("rows", {})
        if name in rows:
            return rows[name]
        raise AttributeError(f"Credit has no per-row tensor {name!r}; it has {sorted(rows)}")

    @property
    def num_rows(self) -> int:
        return next(iter(self.rows.values())).shape[0] if self.rows else 0

    def select(self, idx: RowIndex) -> Credit:
        """The per-row tensors of rows `idx`; the normalizer and metrics stay global."""
        if not self.rows:
            return Credit(rows={}, normalizer=self.normalizer, metrics=self.metrics)
        device = next(iter(self.rows.values())).device
        index = _as_index(idx, self.num_rows, device)
        return Credit(
            rows={k: v[index] for k, v in self.rows.items()}, normalizer=self.normalizer, metrics=self.metrics
        )
