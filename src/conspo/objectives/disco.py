"""DisCO: Discriminative Constrained Optimization (Li et al. 2025, arXiv 2505.12366, Eq. 9-11)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from .base import ScoreObjective, check_choice, check_range
from .batch import Credit, LossOutput, RolloutBatch
from .credits import linear_objective
from .groups import GroupIndex, group_index, segment_logsumexp, segment_sum
from .registry import register_objective
from .scores import k3_kl, likelihood_ratio_score, masked_token_sum, response_lengths, sequence_logprob_score

__all__ = ["DisCO"]


@register_objective("disco")
@dataclass
class DisCO(ScoreObjective):
    """DisCO: a discriminative objective on non-clipped scores, with a KL trust region as a squared hinge.

    Per valid group (Eq. 9 / 11, "DisCO" = the DRO / log-sum-exp form over negatives):
        J(q) = mean_{i in P} s_i - tau * log mean_{j in N} exp(s_j / tau)        (negatives="lse")
        J(q) = mean_{i in P} s_i - mean_{j in N} s_j                                 (negatives="mean", DisCO-b)
    with s = mean token log-prob ("logprob", log-L) or mean token ratio pi_theta/pi_old ("ratio", L-ratio).
    The constraint KL(pi_old || pi_theta) <= delta enters as the penalty (beta/2) [D - delta]_+^2, where D is the
    k3 estimate over every valid token of the batch; its gradient beta [D - delta]_+ grad D is the one
    the official implementation backpropagates. Loss = -mean over valid groups of J(q) + penalty.
    In a distributed run D is the one of the batch given to `credit` (per process unless gathered).
    """

    score_kind: Literal["logprob", "ratio"] = field(
        default="logprob", metadata={"help": "'logprob' (log-L, DisCO's default) or 'ratio' (L-ratio)."}
    )
    negatives: Literal["lse", "mean"] = field(
        default="lse", metadata={"help": "'lse': DRO log-sum-exp over negatives (DisCO); 'mean': DisCO-b."}
    )
    tau: float = field(
        default=10.0,
        metadata={"help": "temperature of the log-sum-exp (DisCO: 10 for log-L, 1 for L-ratio)."},
    )
    delta: float = field(default=1e-4, metadata={"help": "KL trust-region radius delta >= 0 (DisCO: 1e-4)."})
    beta: float = field(
        default=1e3, metadata={"help": "squared-hinge penalty weight beta >= 0 (DisCO: 1e3); 0 disables it."}
    )

    aliases = {"score": "score_kind"}  # noqa: RUF012

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("disco", "score_kind", self.score_kind, ("logprob", "ratio"))
        check_choice("disco", "negatives", self.negatives, ("lse", "mean"))
        check_range("disco", "tau", self.tau, low=0.0, low_open=True)
        check_range("disco", "delta", self.delta, low=0.0)
        check_range("disco", "beta", self.beta, low=0.0)

    @property
    def needs_old_logps(self) -> bool:
        # The KL constraint and the L-ratio score compare with the sampling policy.
        return True

    def score(self, batch: RolloutBatch) -> torch.Tensor:
        if self.score_kind == "ratio":
            return likelihood_ratio_score(batch.token_logps, batch.old_token_logps, batch.mask)
        return sequence_logprob_score(batch.token_logps, batch.mask)

    def group_objective(self, scores: torch.Tensor, gi: GroupIndex, progress: float) -> torch.Tensor:
        if self.negatives == "mean":
            return linear_objective(scores, gi)
        zero = torch.zeros_like(scores)
        pos_mean = segment_sum(
            torch.where(gi.is_pos, scores, zero), gi.inverse, gi.num_groups
        ) / gi.num_pos.clamp(min=1)
        neg_logit = torch.where(gi.is_neg, scores / self.tau, torch.full_like(scores, float("-inf")))
        log_mean_exp = segment_logsumexp(neg_logit, gi.inverse, gi.num_groups) - torch.log(
            gi.num_neg.clamp(min=1)
        )
        return torch.where(gi.valid, pos_mean - self.tau * log_mean_exp, torch.zeros_like(pos_mean))

    # ---- the KL constraint ----------------------------------------------------------------------
    def _kl_rows_old(self, batch: RolloutBatch) -> torch.Tensor:
        """Per-row sum over tokens of the k3 estimate of KL(pi_old || pi_theta) (0 when on-policy)."""
        old = batch.token_logps.detach() if batch.old_token_logps is None else batch.old_token_logps
        return masked_token_sum(k3_kl(old, batch.token_logps), batch.mask)

    def _hinge(self, kl_mean: torch.Tensor) -> torch.Tensor:
        return (kl_mean - self.delta).clamp(min=0.0)

    def credit(self, batch: RolloutBatch, progress: float = 0.0) -> Credit:
        credit = super().credit(batch, progress)
        batch = batch.detach()
        gi = group_index(batch.group_ids, batch.labels)
        with torch.no_grad():
            valid = gi.row_valid
            zeros = torch.zeros(batch.num_rows, device=valid.device)
            kl_sum = torch.where(valid, self._kl_rows_old(batch), zeros)
            tokens = credit.normalizer["tokens"].clamp(min=1)
            kl_mean = kl_sum.sum() / tokens
            hinge = self._hinge(kl_mean)
            penalty = 0.5 * self.beta * hinge.square()
            slope = self.beta * hinge  # d penalty / d D
            lengths = torch.where(valid, response_lengths(batch.mask), zeros)
            # Detached per-row share of (penalty - slope * D) so the decomposed value matches, as a token share.
            kl_offset = (penalty - slope * kl_mean) * lengths
        credit.rows["kl_slope"] = torch.where(valid, slope.expand(batch.num_rows), torch.zeros_like(lengths))
        credit.rows["kl_offset"] = kl_offset
        credit.metrics["disco/kl"] = kl_mean
        credit.metrics["disco/penalty"] = penalty
        return credit

    def loss(
        self, batch: RolloutBatch, credit: Credit, normalizer: dict[str, torch.Tensor] | None = None
    ) -> LossOutput:
        out = super().loss(batch, credit, normalizer)
        if self.beta <= 0:
            return out
        tokens = self._norm(normalizer, credit, "tokens")
        constraint = (credit.kl_slope * self._kl_rows_old(batch) + credit.kl_offset).sum() / tokens
        return LossOutput(loss=out.loss + constraint, metrics=out.metrics)

    def __call__(self, batch: RolloutBatch, progress: float = 0.0) -> LossOutput:
        out = super().__call__(batch, progress)
        if self.beta <= 0:
            return out
        gi = group_index(batch.group_ids, batch.labels)
        valid = gi.row_valid
        kl_sum = torch.where(
            valid, self._kl_rows_old(batch), torch.zeros(batch.num_rows, device=valid.device)
        )
        lengths = torch.where(valid, response_lengths(batch.mask), torch.zeros_like(kl_sum))
        kl_mean = kl_sum.sum() / lengths.sum().clamp(min=1)
        penalty = 0.5 * self.beta * self._hinge(kl_mean).square()
        metrics = {**out.metrics, "disco/kl": kl_mean.detach(), "disco/penalty": penalty.detach()}
        return LossOutput(loss=out.loss + penalty, metrics=metrics)
