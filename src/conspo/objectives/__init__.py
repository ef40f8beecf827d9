"""conspo.objectives: ConSPO, its ablations and the paper's RLVR baselines, in torch only.

Every objective is a score per rollout times a credit per rollout. Quick use::

    from conspo.objectives import RolloutBatch, get_objective

    objective = get_objective("conspo")                     # tau=10, M=0.01, alpha=0.3, cosine margin
    batch = RolloutBatch(token_logps, mask, group_ids, rewards)
    out = objective(batch, progress=step / total_steps)     # coupled form: LossOutput(loss, metrics)
    out.loss.backward()

    credit = objective.credit(batch.detach(), progress=lam) # decomposed form: no-grad, group-aware
    for idx in micro_batches:                               # any partition of the rows
        objective.loss(batch.select(idx), credit.select(idx), normalizer=credit.normalizer).loss.backward()

Importing this package imports torch and nothing else from the ecosystem.
"""

from __future__ import annotations

from .analysis import grpo_discriminative_form
from .base import Objective, RatioObjective, ScoreObjective
from .batch import Credit, LossOutput, RolloutBatch
from .conspo import (
    ConSPO,
    infonce_credit,
    infonce_objective,
    linear_credit,
    linear_objective,
    margin_schedule,
)
from .credits import autograd_credit, grpo_advantages, grpo_credit
from .disco import DisCO
from .groups import (
    GroupIndex,
    check_whole_groups,
    group_index,
    mean_over_valid,
    score_gap,
    segment_logsumexp,
    segment_max,
    segment_mean,
    segment_sum,
)
from .grpo import DAPO, GRPO, DrGRPO, overlong_reward_penalty
from .registry import (
    get_objective,
    hyperparameter_field,
    list_objectives,
    objective_class,
    parse_objective_spec,
    register_objective,
)
from .scores import (
    clipped_ratio_score,
    k3_kl,
    likelihood_ratio_score,
    masked_fraction,
    masked_token_mean,
    masked_token_sum,
    response_lengths,
    sequence_logprob_score,
    token_log_ratio,
)
from .sequence_ratio import GMPO, GSPO
from .soft_clip import CISPO, SAPO
from .surrogate import clipped_surrogate

__all__ = [
    "CISPO",
    "DAPO",
    "GMPO",
    "GRPO",
    "GSPO",
    "SAPO",
    "ConSPO",
    "Credit",
    "DisCO",
    "DrGRPO",
    "GroupIndex",
    "LossOutput",
    "Objective",
    "RatioObjective",
    "RolloutBatch",
    "ScoreObjective",
    "autograd_credit",
    "check_whole_groups",
    "clipped_ratio_score",
    "clipped_surrogate",
    "get_objective",
    "group_index",
    "grpo_advantages",
    "grpo_credit",
    "grpo_discriminative_form",
    "hyperparameter_field",
    "infonce_credit",
    "infonce_objective",
    "k3_kl",
    "likelihood_ratio_score",
    "linear_credit",
    "linear_objective",
    "list_objectives",
    "margin_schedule",
    "masked_fraction",
    "masked_token_mean",
    "masked_token_sum",
    "mean_over_valid",
    "objective_class",
    "overlong_reward_penalty",
    "parse_objective_spec",
    "register_objective",
    "response_lengths",
    "score_gap",
    "segment_logsumexp",
    "segment_max",
    "segment_mean",
    "segment_sum",
    "sequence_logprob_score",
    "token_log_ratio",
]
