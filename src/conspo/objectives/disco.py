"""DisCO: Discriminative Constrained Optimization (Li et al. 2025, arXiv 2505.12366, Eq. 9-11)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from .base import NormalizeOver, ScoreObjective, check_choice, check_range, counted_rows
from .batch import Credit, LossOutput, RolloutBatch
from .groups import GroupIndex, group_index, score_gap, segment_logsumexp, segment_sum
from .registry import register_objective
from .scores import (
    likelihood_ratio_score,
    masked_token_sum,
    response_lengths,
    sequence_logprob_score,
    token_log_ratio,
)

__all__ = ["KL_ESTIMATORS", "DisCO", "old_policy_kl"]


KL_ESTIMATORS: dict[str, str] = {
    "k1": "k1",
    "k2": "k2",
    "k3": "k3",
    "kl": "k1",
    "mse": "k2",
    "low_var_kl": "k3",
}
"""DisCO's KL estimators and verl's names for them (`kl` = k1, `mse` = k2, `low_var_kl` = k3)."""

K3_CLAMP = 10.0
"""verl's `kl_penalty(..., "low_var_kl")` clamps the k3 value to [-10, 10]; k3 >= 0, so only the top binds."""


def old_policy_kl(
    token_logps: torch.Tensor, old_token_logps: torch.Tensor | None, estimator: str
) -> torch.Tensor:
    """Per-token estimate of KL(pi_old || pi_theta) from tokens sampled by pi_old, float32+ [B, T].

    With log r = log pi_theta - log pi_old (clamped to +-20 as verl does): k1 = -log r (the DisCO scripts'
    `ppo_kl_type=kl`), k2 = (log r)^2 / 2 (`mse`), k3 = r - 1 - log r clamped at 10 (`low_var_kl`; the
    DisCO function leaves it unclamped, verl's `kl_penalty` clamps). None old log-probs: on-policy, 0.
    """
    log_ratio = token_log_ratio(token_logps, old_token_logps)
    kind = KL_ESTIMATORS[estimator]
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio.square()
    return (torch.exp(log_ratio) - log_ratio - 1.0).clamp(max=K3_CLAMP)


@register_objective("disco")
@dataclass
class DisCO(ScoreObjective):
    """DisCO: a discriminative objective on non-clipped scores, with a KL trust region as a squared hinge.

    Per valid group (Eq. 9 / 11, "DisCO" = the DRO / log-sum-exp form over negatives):
        J(q) = mean_{i in P} s_i - tau * log mean_{j in N} exp(s_j / tau)        (negatives="lse")
        J(q) = mean_{i in P} s_i - mean_{j in N} s_j                                 (negatives="mean", DisCO-b)
    with s = mean token log-prob ("logprob", log-L) or mean token ratio pi_theta/pi_old ("ratio", L-ratio).
    The constraint KL(pi_old || pi_theta) <= delta enters as the penalty (beta/2) [D - delta]_+^2, where D is
    the token mean of `kl_estimator` (k1 by default, as the authors' scripts run it); its gradient
    beta [D - delta]_+ grad D is the one the official implementation backpropagates.
    Loss = -(1/n_groups) sum_g J(q) + penalty. With `normalize_over="all"` (the default, as the authors'
    `compute_policy_loss_disco_*`) n_groups counts every question of the batch and D runs over every token;
    with "valid" both are restricted to the valid groups (the ConSPO paper's filtering).
    In a distributed run D is the one of the batch given to `credit` (per process unless gathered).
    """

    normalize_over: NormalizeOver = field(
        default="all",
        metadata={
            "help": "'all' (the DisCO code: the main term / every question, D over every token) or 'valid' "
            "(valid groups only, as the ConSPO paper filters)."
        },
    )
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
    kl_estimator: Literal["k1", "k2", "k3", "kl", "mse", "low_var_kl"] = field(
        default="k1",
        metadata={
            "help": "estimator of KL(pi_old || pi_theta) in the constraint: 'k1' (the DisCO scripts' "
            "ppo_kl_type=kl), 'k2', or 'k3' (low_var_kl, clamped at 10 as verl); verl's names are accepted."
        },
    )

    aliases = {"score": "score_kind"}  # noqa: RUF012

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("disco", "score_kind", self.score_kind, ("logprob", "ratio"))
        check_choice("disco", "negatives", self.negatives, ("lse", "mean"))
        check_range("disco", "tau", self.tau, low=0.0, low_open=True)
        check_range("disco", "delta", self.delta, low=0.0)
        check_range("disco", "beta", self.beta, low=0.0)
        check_choice("disco", "kl_estimator", self.kl_estimator, tuple(KL_ESTIMATORS))
        self.kl_estimator = KL_ESTIMATORS[self.kl_estimator]  # verl's names -> k1 / k2 / k3

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
            return score_gap(scores, gi)
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
        """Per-row sum over tokens of the `kl_estimator` estimate of KL(pi_old || pi_theta) (0 on-policy)."""
        kl = old_policy_kl(batch.token_logps, batch.old_token_logps, self.kl_estimator)
        return masked_token_sum(kl, batch.mask)

    def _hinge(self, kl_mean: torch.Tensor) -> torch.Tensor:
        return (kl_mean - self.delta).clamp(min=0.0)

    def credit(self, batch: RolloutBatch, progress: float = 0.0) -> Credit:
        credit = super().credit(batch, progress)
        batch = batch.detach()
        gi = group_index(batch.group_ids, batch.labels)
        with torch.no_grad():
            valid = counted_rows(gi, self.normalize_over)
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
        valid = counted_rows(gi, self.normalize_over)
        kl_sum = torch.where(
            valid, self._kl_rows_old(batch), torch.zeros(batch.num_rows, device=valid.device)
        )
        lengths = torch.where(valid, response_lengths(batch.mask), torch.zeros_like(kl_sum))
        kl_mean = kl_sum.sum() / lengths.sum().clamp(min=1)
        penalty = 0.5 * self.beta * self._hinge(kl_mean).square()
        metrics = {**out.metrics, "disco/kl": kl_mean.detach(), "disco/penalty": penalty.detach()}
        return LossOutput(loss=out.loss + penalty, metrics=metrics)
