"""The objective protocol and the two families every registered objective belongs to.

An objective is a dataclass whose fields are its hyperparameters. It offers two exact forms:

- coupled: `objective(batch, progress)` sees whole groups and lets autograd do the rest;
- decomposed: `credit = objective.credit(batch, progress)` (no grad, group-aware, on the whole
  optimizer-step batch), then `objective.loss(micro, credit.select(idx), normalizer=...)` on any partition
  of the rows. Summed over the partition it gives the coupled value and gradient, provided the micro-batch
  log-probs are the ones the credit was computed from (recompute credit at each optimizer step).

`ScoreObjective` (ConSPO, DisCO): a sequence score s_i(theta) per rollout and a group objective J(s);
the decomposed loss backpropagates -sum_i c_i s_i(theta) with c = dJ/ds detached.
`RatioObjective` (GRPO, Dr. GRPO, DAPO, GSPO, GMPO, CISPO, SAPO): group-relative advantages (no grad)
times a per-token or per-sequence importance-ratio surrogate; the advantages are the credit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Literal

import torch

from .batch import Credit, LossOutput, RolloutBatch
from .credits import autograd_credit, grpo_advantages
from .groups import GroupIndex, group_index, mean_over_valid, score_gap, segment_sum
from .scores import k3_kl, masked_token_mean, masked_token_sum, response_lengths, sequence_logprob_score

__all__ = [
    "NORMALIZE_OVER",
    "Objective",
    "RatioObjective",
    "ScoreObjective",
    "check_range",
    "counted_rows",
    "group_share",
]


def check_range(
    owner: str,
    name: str,
    value: float,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ValueError naming `owner.name` unless value lies in the stated interval."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
    bad_low = low is not None and (value <= low if low_open else value < low)
    bad_high = high is not None and (value >= high if high_open else value > high)
    if bad_low or bad_high:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        interval = (
            f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        )
        raise ValueError(f"{owner}.{name} must be in {interval}, got {value!r}")


def check_choice(owner: str, name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{owner}.{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def _count(x: torch.Tensor) -> torch.Tensor:
    return x.detach().float().sum()


def _group_metrics(batch: RolloutBatch, gi: GroupIndex) -> dict[str, torch.Tensor]:
    """Batch-level diagnostics every objective reports (computed without grad)."""
    with torch.no_grad():
        s = sequence_logprob_score(batch.token_logps.detach(), batch.mask)
        return {
            "groups/valid_frac": gi.num_valid / max(gi.num_groups, 1),
            "groups/num_valid": gi.num_valid,
            "scores/logprob_gap": mean_over_valid(score_gap(s, gi), gi),
        }


NormalizeOver = Literal["valid", "all"]
NORMALIZE_OVER: tuple[str, ...] = ("valid", "all")


def counted_rows(gi: GroupIndex, over: NormalizeOver) -> torch.Tensor:
    """[B] bool: the rows the loss averages over; "valid": labelled rows of valid groups, "all": every row."""
    if over == "all":
        return torch.ones_like(gi.row_valid)
    return gi.row_valid


def group_share(gi: GroupIndex, over: NormalizeOver) -> torch.Tensor:
    """[B] float: 1 / (rows of the row's group that count) on counted rows, 0 elsewhere (the group mean)."""
    rows = counted_rows(gi, over)
    if over == "all":
        size = segment_sum(torch.ones_like(gi.size[gi.inverse]), gi.inverse, gi.num_groups)
    else:
        size = gi.size
    share = (1.0 / size.clamp(min=1))[gi.inverse]
    return torch.where(rows, share, torch.zeros_like(share))


def _normalizer(
    batch: RolloutBatch, gi: GroupIndex, over: NormalizeOver = "valid"
) -> dict[str, torch.Tensor]:
    """Global counts of what the loss averages over: groups, sequences and tokens that count.

    "valid": the valid groups, their labelled rows and those rows' tokens (the paper's filtering);
    "all": every group, row and token of the batch (TRL, verl and the DisCO code average over these).
    """
    rows = counted_rows(gi, over)
    groups = (
        gi.num_valid.detach() if over == "valid" else _count(torch.ones(gi.num_groups, device=rows.device))
    )
    return {
        "groups": groups,
        "sequences": _count(rows),
        "tokens": _count(
            torch.where(rows, response_lengths(batch.mask), torch.zeros_like(rows, dtype=torch.float))
        ),
    }


@dataclass
class Objective:
    """Base of every registered objective. Subclasses are dataclasses whose fields are hyperparameters."""

    name: ClassVar[str] = ""
    """Registry name, set by `register_objective`."""
    aliases: ClassVar[dict[str, str]] = {}
    """Alternative hyperparameter names accepted by `get_objective` (alias -> field name)."""
    normalize_by: ClassVar[Literal["groups", "tokens"]] = "groups"
    """The global count (a `Credit.normalizer` key) that the objective's main term is divided by."""

    kl_coef: float = field(
        default=0.0,
        metadata={
            "help": "beta of an optional k3 KL(pi_theta || pi_ref) penalty; > 0 needs ref_token_logps."
        },
    )
    normalize_over: NormalizeOver = field(
        default="valid",
        metadata={
            "help": "what the loss averages over: 'valid' groups (the paper: all-correct / all-wrong groups and "
            "rows labelled -1 count nowhere) or 'all' rows, groups and tokens of the batch (TRL, verl)."
        },
    )

    def __post_init__(self) -> None:
        check_range(type(self).__name__, "kl_coef", self.kl_coef, low=0.0)
        check_choice(self.name or type(self).__name__, "normalize_over", self.normalize_over, NORMALIZE_OVER)

    # ---- protocol ---------------------------------------------------------------------------------
    @property
    def needs_old_logps(self) -> bool:
        """True when the objective uses importance ratios pi_theta / pi_old (None still means on-policy)."""
        return False

    @property
    def needs_ref_logps(self) -> bool:
        """True when the KL coefficient is > 0 (then `ref_token_logps` is required)."""
        return self.kl_coef > 0

    def hyperparameters(self) -> dict[str, object]:
        return asdict(self)

    def __call__(self, batch: RolloutBatch, progress: float = 0.0) -> LossOutput:
        raise NotImplementedError

    def credit(self, batch: RolloutBatch, progress: float = 0.0) -> Credit:
        raise NotImplementedError

    def loss(
        self, batch: RolloutBatch, credit: Credit, normalizer: dict[str, torch.Tensor] | None = None
    ) -> LossOutput:
        raise NotImplementedError

    # ---- shared pieces ----------------------------------------------------------------------------
    def _check_batch(self, batch: RolloutBatch) -> None:
        if not isinstance(batch, RolloutBatch):
            raise TypeError(
                f"{self.name or type(self).__name__}: expected a RolloutBatch, got {type(batch).__name__}"
            )
        if self.needs_ref_logps and batch.ref_token_logps is None:
            raise ValueError(
                f"{self.name}: kl_coef={self.kl_coef} > 0 needs RolloutBatch.ref_token_logps (got None); "
                "pass reference log-probs or set kl_coef=0"
            )

    def _token_kl(self, batch: RolloutBatch) -> torch.Tensor | None:
        if self.kl_coef <= 0:
            return None
        assert batch.ref_token_logps is not None
        return k3_kl(batch.token_logps, batch.ref_token_logps)

    @staticmethod
    def _norm(normalizer: dict[str, torch.Tensor] | None, credit: Credit, key: str) -> torch.Tensor:
        counts = credit.normalizer if normalizer is None else normalizer
        if key not in counts:
            raise KeyError(f"normalizer has no count {key!r}; it has {sorted(counts)}")
        return counts[key].clamp(min=1)


@dataclass
class ScoreObjective(Objective):
    """A group objective J(s) on per-rollout sequence scores s_i(theta); credit c_i = dJ/ds_i.

    Subclasses implement `score` (per row, differentiable, separable) and `group_objective` ([num_groups],
    0 for invalid groups); they may override `score_credit` with an analytic form. The loss is
    -(1/n_groups) sum_g J_g (+ kl_coef * mean over each group of the token-mean k3 KL), n_groups and the
    group means taken over valid groups (`normalize_over="valid"`) or over every group (`"all"`).
    """

    def score(self, batch: RolloutBatch) -> torch.Tensor:
        raise NotImplementedError

    def group_objective(self, scores: torch.Tensor, gi: GroupIndex, progress: float) -> torch.Tensor:
        raise NotImplementedError

    def score_credit(
        self, scores: torch.Tensor, gi: GroupIndex, progress: float
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(coef [B], per-group objective [num_groups], metrics); default: exact autograd dJ/ds."""
        coef, per_group = autograd_credit(lambda s: self.group_objective(s, gi, progress), scores)
        return coef, per_group, {}

    def _kl_rows(self, batch: RolloutBatch) -> torch.Tensor | None:
        """Token-mean k3 KL to the reference per row [B], or None when kl_coef == 0."""
        kl = self._token_kl(batch)
        return None if kl is None else masked_token_mean(kl, batch.mask)

    def credit(self, batch: RolloutBatch, progress: float = 0.0) -> Credit:
        self._check_batch(batch)
        batch = batch.detach()
        gi = group_index(batch.group_ids, batch.labels)
        with torch.no_grad():
            scores = self.score(batch)
            coef, per_group, metrics = self.score_credit(scores, gi, progress)
            # Detached per-row constants that make the decomposed loss VALUE equal the coupled one:
            # the group's J_g - sum_i c_i s_i, shared equally by its labelled rows.
            rest = per_group - segment_sum(coef * scores, gi.inverse, gi.num_groups)
            offset = torch.where(
                gi.row_valid, (rest / gi.size.clamp(min=1))[gi.inverse], torch.zeros_like(scores)
            )
            weight = group_share(gi, self.normalize_over).to(scores.dtype)
        metrics = {**_group_metrics(batch, gi), **metrics}
        return Credit(
            rows={"coef": coef, "offset": offset, "weight": weight, "score": scores},
            normalizer=_normalizer(batch, gi, self.normalize_over),
            metrics=metrics,
        )

    def loss(
        self, batch: RolloutBatch, credit: Credit, normalizer: dict[str, torch.Tensor] | None = None
    ) -> LossOutput:
        self._check_batch(batch)
        if credit.num_rows != batch.num_rows:
            raise ValueError(f"{self.name}: credit has {credit.num_rows} rows, batch has {batch.num_rows}")
        scores = self.score(batch)
        total = (credit.coef * scores + credit.offset).sum()
        metrics: dict[str, torch.Tensor] = {}
        kl = self._kl_rows(batch)
        if kl is not None:
            total = total - self.kl_coef * (credit.weight * kl).sum()
            metrics["kl/mean"] = kl.detach().mean()
        loss = -total / self._norm(normalizer, credit, "groups")
        return LossOutput(loss=loss, metrics=metrics)

    def __call__(self, batch: RolloutBatch, progress: float = 0.0) -> LossOutput:
        self._check_batch(batch)
        gi = group_index(batch.group_ids, batch.labels)
        scores = self.score(batch)
        per_group = self.group_objective(scores, gi, progress)
        total = per_group.sum()
        metrics = dict(_group_metrics(batch, gi))
        with torch.no_grad():
            _, _, extra = self.score_credit(scores.detach(), gi, progress)
        metrics.update(extra)
        kl = self._kl_rows(batch)
        if kl is not None:
            weight = group_share(gi, self.normalize_over).to(kl.dtype)
            total = total - self.kl_coef * (weight * kl).sum()
            metrics["kl/mean"] = kl.detach().mean()
        loss = -total / _normalizer(batch, gi, self.normalize_over)["groups"].clamp(min=1)
        return LossOutput(loss=loss, metrics=metrics)


@dataclass
class RatioObjective(Objective):
    """Group-relative advantages (the credit) times an importance-ratio surrogate f (to maximize).

    `surrogate(batch, advantages)` returns per-token values [B, T] (reduced by `token_reduction`) or
    per-row values [B]. Aggregation: "groups" = mean over each valid group's rows, then over valid groups
    (GRPO, Eq. 2); "tokens" = sum over all valid tokens / their global count (DAPO's token-level mean).
    With `normalize_over="all"` every row, group and token counts instead (TRL's and verl's aggregation;
    rows of all-correct / all-wrong groups have zero advantage, so they add only their KL term).
    """

    token_reduction: ClassVar[Literal["mean", "sum"]] = "mean"
    scale_by_std: ClassVar[bool] = True

    @property
    def needs_old_logps(self) -> bool:
        return True

    def surrogate(
        self, batch: RolloutBatch, advantages: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def row_weight(self, batch: RolloutBatch, gi: GroupIndex) -> torch.Tensor:
        """Per-row aggregation weight (before dividing by the global count)."""
        if self.normalize_by == "tokens":
            return counted_rows(gi, self.normalize_over).float()
        return group_share(gi, self.normalize_over)

    def credit(self, batch: RolloutBatch, progress: float = 0.0) -> Credit:
        self._check_batch(batch)
        batch = batch.detach()
        gi = group_index(batch.group_ids, batch.labels)
        with torch.no_grad():
            adv = grpo_advantages(batch.rewards, batch.labels, batch.group_ids, self.scale_by_std, groups=gi)
            weight = self.row_weight(batch, gi)
        return Credit(
            rows={"advantages": adv, "weight": weight},
            normalizer=_normalizer(batch, gi, self.normalize_over),
            metrics=_group_metrics(batch, gi),
        )

    def _reduce(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if values.dim() == 1:
            return values
        if self.token_reduction == "sum":
            return masked_token_sum(values, mask)
        return masked_token_mean(values, mask)

    def loss(
        self, batch: RolloutBatch, credit: Credit, normalizer: dict[str, torch.Tensor] | None = None
    ) -> LossOutput:
        self._check_batch(batch)
        if credit.num_rows != batch.num_rows:
            raise ValueError(f"{self.name}: credit has {credit.num_rows} rows, batch has {batch.num_rows}")
        values, metrics = self.surrogate(batch, credit.advantages)
        per_row = self._reduce(values, batch.mask)
        kl = self._token_kl(batch)
        if kl is not None:
            # KL reduced like the surrogate; a per-sequence surrogate takes the token mean (GSPO, GMPO).
            kl_row = (
                masked_token_sum(kl, batch.mask)
                if (values.dim() == 2 and self.token_reduction == "sum")
                else masked_token_mean(kl, batch.mask)
            )
            per_row = per_row - self.kl_coef * kl_row
            metrics["kl/mean"] = masked_token_mean(kl.detach(), batch.mask).mean()
        loss = -(credit.weight * per_row).sum() / self._norm(normalizer, credit, self.normalize_by)
        return LossOutput(loss=loss, metrics=metrics)

    def __call__(self, batch: RolloutBatch, progress: float = 0.0) -> LossOutput:
        credit = self.credit(batch, progress)
        out = self.loss(batch, credit)
        return LossOutput(loss=out.loss, metrics={**credit.metrics, **out.metrics})
