"""ConSPO: Contrastive Sequence-level Policy Optimization (arXiv 2605.12969, Sec. 4.2-4.3, Eq. 8-13).

Per valid group q with positives P and negatives N (Eq. 13):

    J(q) = (1/N+) sum_{i in P} tau * log[ exp((s_i - m_t)/tau) / (exp((s_i - m_t)/tau) + sum_{j in N} exp(s_j/tau)) ]

with s_i = (1/|o_i|) sum_t log pi_theta(o_{i,t}) (likelihood-aligned score) and m_t the scheduled margin.
The loss is -mean over valid groups of J(q). No importance ratio, no clipping, no old log-probs.
The Table 6 ablations are hyperparameters of this one objective, not copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

import torch

from .base import ScoreObjective, check_choice, check_range
from .batch import RolloutBatch
from .credits import infonce_credit, infonce_objective, linear_credit, linear_objective
from .groups import GroupIndex, segment_sum
from .margins import margin_schedule
from .registry import register_objective
from .scores import clipped_ratio_score, sequence_logprob_score

__all__ = ["ConSPO"]


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
    margin: Literal["cosine", "fixed", "none"] = field(
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
        labels = torch.where(gi.is_pos, 1, torch.where(gi.is_neg, 0, -1))
        zero = torch.zeros_like(scores)
        if self.credit_kind == "linear":
            coef = linear_credit(labels, labels, groups=gi)
            per_group = linear_objective(scores, gi, m)
            p_pos = zero
        else:
            coef, diag = infonce_credit(scores, labels, labels, self.tau, m, groups=gi)
            per_group, p_pos = diag["objective"], diag["p_pos"]
        num_valid = gi.num_valid.clamp(min=1)
        pos = segment_sum(torch.where(gi.is_pos, scores, zero), gi.inverse, gi.num_groups) / gi.num_pos.clamp(
            min=1
        )
        neg = segment_sum(torch.where(gi.is_neg, scores, zero), gi.inverse, gi.num_groups) / gi.num_neg.clamp(
            min=1
        )
        coef_sum = segment_sum(coef, gi.inverse, gi.num_groups)
        metrics = {
            "conspo/p_pos": p_pos.sum() / gi.is_pos.sum().clamp(min=1),
            "conspo/score_gap": torch.where(gi.valid, pos - neg, torch.zeros_like(pos)).sum() / num_valid,
            "conspo/margin": torch.tensor(m, dtype=torch.float32, device=scores.device),
            "conspo/coef_sum": coef_sum.abs().max() if gi.num_groups else zero.sum(),
            "conspo/objective": per_group.sum() / num_valid,
        }
        return coef, per_group, metrics
