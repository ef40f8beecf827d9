"""ConSPO: Contrastive Sequence-level Policy Optimization (arXiv 2605.12969, Sec. 4.2-4.3, Eq. 8-13).

This file is the method, top to bottom: the score s_i (Sec. 4.2), the margin m_t (Sec. 4.3), the per-group
objective J(q) (Eq. 13), its credit c_i = dJ/ds_i (Lemma 2) and the `ConSPO` objective that puts them together.
Per valid group q (at least one positive, one negative) with positives P and negatives N (Eq. 13):

    J(q) = (1/N+) sum_{i in P} tau * log[ exp((s_i - m_t)/tau) / (exp((s_i - m_t)/tau) + sum_{j in N} exp(s_j/tau)) ]

with s_i = (1/|o_i|) sum_t log pi_theta(o_{i,t}) (likelihood-aligned score) and m_t the scheduled margin.
The loss is -mean over valid groups of J(q). No importance ratio, no clipping, no old log-probs.
The Table 6 ablations (linear credit, clipped-ratio score, fixed / no margin) are hyperparameters of this one
objective, not copies. The product score x credit, -sum_i c_i s_i(theta) / n_groups, and its coupled twin are
the `ScoreObjective` family's (`base.py`), shared with DisCO.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from .base import ScoreObjective, check_choice, check_range
from .batch import RolloutBatch
from .groups import GroupIndex, group_index, mean_over_valid, score_gap, segment_logsumexp, segment_sum
from .registry import register_objective
from .scores import at_least_fp32, clipped_ratio_score, sequence_logprob_score

__all__ = [
    "ConSPO",
    "MarginKind",
    "infonce_credit",
    "infonce_objective",
    "linear_credit",
    "linear_objective",
    "margin_schedule",
]

MarginKind = Literal["cosine", "fixed", "none"]


# ---- Sec. 4.3: the margin m_t, a pure function of training progress ---------------------------------------


def margin_schedule(
    progress: float, kind: MarginKind = "cosine", target: float = 0.01, warmup: float = 0.3
) -> float:
    """The margin m_t at normalized progress lambda_t = step / total_steps.

    - "cosine" (the paper's curriculum): rho = min(lambda / alpha, 1), m = (M/2)(1 - cos(pi rho));
      m = 0 at the start, rises smoothly to M at lambda = alpha and stays there.
    - "fixed": m = M throughout (Table 6 ablation). "none": m = 0 (Table 6 ablation).

    `target` is M (nats per token, >= 0), `warmup` is alpha in (0, 1]. Progress outside [0, 1] is clamped
    (a trainer's last step may overshoot by one).
    """
    if not math.isfinite(progress):
        raise ValueError(f"margin_schedule: progress must be a finite number, got {progress}")
    if target < 0 or not math.isfinite(target):
        raise ValueError(f"margin_schedule: target margin M must be >= 0, got {target}")
    if not 0.0 < warmup <= 1.0:
        raise ValueError(f"margin_schedule: warmup alpha must be in (0, 1], got {warmup}")
    if kind == "none":
        return 0.0
    if kind == "fixed":
        return float(target)
    if kind != "cosine":
        raise ValueError(f"margin_schedule: kind must be 'cosine', 'fixed' or 'none', got {kind!r}")
    lam = min(max(float(progress), 0.0), 1.0)
    rho = min(lam / warmup, 1.0)
    return 0.5 * target * (1.0 - math.cos(math.pi * rho))


# ---- Eq. 13: the per-group InfoNCE objective --------------------------------------------------------------


def _eq13_logits(
    scores: torch.Tensor, gi: GroupIndex, tau: float, margin: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The softmax of Eq. 13 in log space: (pos_logit [B], lse_neg [num_groups], log_z [B]), all finite.

    Positive i's softmax holds itself and its group's negatives only (not the other positives):
        pos_logit_i = (s_i - m) / tau,   lse_neg_q = log sum_{j in N} exp(s_j / tau),
        log Z_i = log( exp(pos_logit_i) + exp(lse_neg_q) ).
    """
    neg_logit = torch.where(gi.is_neg, scores / tau, torch.full_like(scores, float("-inf")))
    lse_neg = segment_logsumexp(neg_logit, gi.inverse, gi.num_groups)
    # Groups without negatives are invalid; give them a finite stand-in so no inf/NaN reaches autograd.
    lse_neg = torch.where(gi.valid, lse_neg, torch.zeros_like(lse_neg))
    pos_logit = (scores - margin) / tau
    log_z = torch.logaddexp(pos_logit, lse_neg[gi.inverse])
    return pos_logit, lse_neg, log_z


def _eq13_objective(pos_logit: torch.Tensor, log_z: torch.Tensor, gi: GroupIndex, tau: float) -> torch.Tensor:
    """J(q) = (1/N+) sum_{i in P} tau * log P_i+, with log P_i+ = pos_logit_i - log Z_i ([num_groups])."""
    term = torch.where(gi.is_pos, tau * (pos_logit - log_z), torch.zeros_like(pos_logit))
    return segment_sum(term, gi.inverse, gi.num_groups) / gi.num_pos.clamp(min=1)


def infonce_objective(
    scores: torch.Tensor, gi: GroupIndex, tau: float = 10.0, margin: float = 0.0
) -> torch.Tensor:
    """ConSPO's per-group objective J(q) (Eq. 8, with the margin inside as Eq. 13), [num_groups], 0 if invalid.

    Differentiable in `scores`: the coupled form backpropagates through it.
    """
    pos_logit, _, log_z = _eq13_logits(scores, gi, tau, margin)
    return _eq13_objective(pos_logit, log_z, gi, tau)


# ---- Lemma 2: the credit c_i = dJ/ds_i of Eq. 13 in closed form -------------------------------------------


def _lemma2(
    scores: torch.Tensor, gi: GroupIndex, tau: float, margin: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(coef [B], {"p_pos", "neg_mass", "objective"}) of Eq. 13 at detached `scores`; see `infonce_credit`."""
    scores = at_least_fp32(scores.detach())
    pos_logit, lse_neg, log_z = _eq13_logits(scores, gi, tau, margin)
    zero = torch.zeros_like(scores)
    # P_i+ = exp(pos_logit_i) / Z_i. 1 - P_i+ = sum_j exp(s_j/tau) / Z_i is computed directly, so there is no
    # cancellation when P_i+ is near 1.
    p_pos = torch.where(gi.is_pos, torch.exp(pos_logit - log_z), zero)
    one_minus_p = torch.where(gi.is_pos, torch.exp(lse_neg[gi.inverse] - log_z), zero)
    # sum_{i in P} P_ij- = softmax over the group's negatives of s_j/tau, times sum_{i in P} (1 - P_i+).
    total = segment_sum(one_minus_p, gi.inverse, gi.num_groups)
    neg_share = torch.where(gi.is_neg, torch.exp(scores / tau - lse_neg[gi.inverse]), zero)
    neg_mass = neg_share * total[gi.inverse]
    # Lemma 2 (Eq. 10): c_i = (1/N+)(1 - P_i+) for a positive, c_j = -(1/N+) sum_{i in P} P_ij- for a negative.
    inv_pos = (1.0 / gi.num_pos.clamp(min=1))[gi.inverse]
    coef = torch.where(gi.is_pos, one_minus_p * inv_pos, -neg_mass * inv_pos)
    objective = _eq13_objective(pos_logit, log_z, gi, tau)
    return coef, {"p_pos": p_pos, "neg_mass": neg_mass, "objective": objective}


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
    `groups` (a `group_index(group_ids, labels)` already built) skips rebuilding the index.

    Returns (coef, diagnostics) with diagnostics `p_pos` [B] (P_i+ on positives, 0 elsewhere),
    `neg_mass` [B] (sum_i P_ij- on negatives) and `objective` [num_groups] (J_g, 0 for invalid groups).
    """
    gi = group_index(group_ids, labels) if groups is None else groups
    return _lemma2(scores, gi, tau, margin)


# ---- Table 6: the linear credit, J(q) = mean_{i in P} (s_i - m) - mean_{j in N} s_j -------------------------


def linear_objective(scores: torch.Tensor, gi: GroupIndex, margin: float = 0.0) -> torch.Tensor:
    """Per-group J_g = mean_{i in P} (s_i - m) - mean_{j in N} s_j, 0 for invalid groups ([num_groups])."""
    return score_gap(scores, gi, margin)


def _linear_coef(gi: GroupIndex) -> torch.Tensor:
    pos = (1.0 / gi.num_pos.clamp(min=1))[gi.inverse]
    neg = -(1.0 / gi.num_neg.clamp(min=1))[gi.inverse]
    return torch.where(gi.is_pos, pos, torch.where(gi.is_neg, neg, torch.zeros_like(pos)))


def linear_credit(
    labels: torch.Tensor, group_ids: torch.Tensor, groups: GroupIndex | None = None
) -> torch.Tensor:
    """Credit of the linear positive-negative difference (Table 6 ablation): +1/N+, -1/N-, 0 elsewhere."""
    return _linear_coef(group_index(group_ids, labels) if groups is None else groups)


# ---- the objective ---------------------------------------------------------------------------------------


@register_objective("conspo")
@dataclass
class ConSPO(ScoreObjective):
    """ConSPO (Eq. 13): InfoNCE over each positive and its group's negatives, on length-normalized log-probs.

    Hyperparameter aliases: `credit=` sets `credit_kind`, `score=` sets `score_kind` (the names would
    shadow the `credit()` and `score()` methods), so `get_objective("conspo:credit=linear")` works.

    Decomposed form: `credit` returns Lemma 2's coefficients c_i = dJ/ds_i (Eq. 10, margin inside as in
    Eq. 13) from no-grad scores; `loss` backpropagates -sum_i c_i s_i(theta) / n_valid_groups.
    """

    aliases: ClassVar[dict[str, str]] = {"credit": "credit_kind", "score": "score_kind"}

    credit_kind: Literal["infonce", "linear"] = field(
        default="infonce",
        metadata={"help": "'infonce' (Eq. 13) or 'linear': J = mean s+ - mean s- (Table 6 ablation)."},
    )
    score_kind: Literal["logprob", "clipped_ratio"] = field(
        default="logprob",
        metadata={
            "help": "'logprob': mean token log-prob (Sec. 4.2); 'clipped_ratio': Eq. 6 scores (Table 6)."
        },
    )
    margin: MarginKind = field(
        default="cosine",
        metadata={"help": "margin schedule: the paper's cosine curriculum, fixed M, or none (Table 6)."},
    )
    tau: float = field(default=10.0, metadata={"help": "contrastive temperature tau > 0 (paper: 10)."})
    margin_max: float = field(
        default=0.01, metadata={"help": "target margin M >= 0, nats per token (paper: 0.01)."}
    )
    margin_warmup: float = field(
        default=0.3,
        metadata={"help": "alpha in (0, 1]: fraction of training over which m rises to M (paper: 0.3)."},
    )
    clip_eps: float = field(
        default=0.2,
        metadata={
            "help": "epsilon > 0 of the clipped-ratio score (INFERRED 0.2; score_kind='clipped_ratio')."
        },
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        owner = "conspo"
        check_choice(owner, "credit_kind", self.credit_kind, ("infonce", "linear"))
        check_choice(owner, "score_kind", self.score_kind, ("logprob", "clipped_ratio"))
        check_choice(owner, "margin", self.margin, ("cosine", "fixed", "none"))
        check_range(owner, "tau", self.tau, low=0.0, low_open=True)
        check_range(owner, "margin_max", self.margin_max, low=0.0)
        check_range(owner, "margin_warmup", self.margin_warmup, low=0.0, high=1.0, low_open=True)
        check_range(owner, "clip_eps", self.clip_eps, low=0.0, low_open=True)

    @property
    def needs_old_logps(self) -> bool:
        return self.score_kind == "clipped_ratio"

    def margin_at(self, progress: float) -> float:
        """m_t at progress lambda = step / total_steps."""
        return margin_schedule(progress, self.margin, self.margin_max, self.margin_warmup)

    def score(self, batch: RolloutBatch) -> torch.Tensor:
        # Sec. 4.2: s_i = (1/|o_i|) sum_t log pi_theta(o_{i,t} | q, o_{i,<t}); Table 6: GRPO's Eq. 6 scores.
        if self.score_kind == "logprob":
            return sequence_logprob_score(batch.token_logps, batch.mask)
        return clipped_ratio_score(
            batch.token_logps, batch.old_token_logps, batch.mask, batch.labels == 1, self.clip_eps
        )

    def group_objective(self, scores: torch.Tensor, gi: GroupIndex, progress: float) -> torch.Tensor:
        m = self.margin_at(progress)
        if self.credit_kind == "linear":
            return linear_objective(scores, gi, m)
        return infonce_objective(scores, gi, self.tau, m)

    def score_credit(
        self, scores: torch.Tensor, gi: GroupIndex, progress: float
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        m = self.margin_at(progress)
        if self.credit_kind == "linear":
            coef, per_group = _linear_coef(gi), linear_objective(scores, gi, m)
            p_pos = torch.zeros_like(scores)
        else:
            coef, diag = _lemma2(scores, gi, self.tau, m)
            per_group, p_pos = diag["objective"], diag["p_pos"]
        metrics = {
            "conspo/p_pos": p_pos.sum() / gi.is_pos.sum().clamp(min=1),
            "conspo/score_gap": mean_over_valid(score_gap(scores, gi), gi),
            "conspo/margin": torch.tensor(m, dtype=torch.float32, device=scores.device),
            "conspo/coef_sum": (
                segment_sum(coef, gi.inverse, gi.num_groups).abs().max() if gi.num_groups else coef.sum()
            ),
            "conspo/objective": mean_over_valid(per_group, gi),
        }
        return coef, per_group, metrics
