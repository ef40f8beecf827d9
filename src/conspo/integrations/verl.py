"""ConSPO as a verl plugin: load with ``VERL_USE_EXTERNAL_MODULES=conspo.integrations.verl``.

verl imports this module on every ``import verl`` (driver, TaskRunner and Ray workers alike), which registers:

- ``algorithm.adv_estimator=conspo``: the ConSPO credit as an advantage. verl's only group-aware stage is
  the driver-side advantage computation, so this is where the group coupling happens: for each group
  (``uid``) it scores the rollouts with ``old_log_probs`` (the policy that is about to be updated) and
  writes ``A_i = c_i * B / n_valid_groups``, where c_i = dJ/ds_i are conspo's Lemma-2 coefficients
  (``objective.credit``) and B the number of rows.
- ``trainer.v1.trainer_mode=conspo_sync``: verl 0.9's generic estimator call passes only
  ``token_level_rewards / response_mask / index / config``, not ``old_log_probs``; this V1 trainer (the
  ``sync`` trainer plus one override of ``_compute_advantage``) fetches ``old_log_probs`` and the global step
  for the estimator. It is required.
- ``actor_rollout_ref.actor.policy_loss.loss_mode=conspo_seq``: the sequence-level, length-normalized
  policy-gradient loss ``-A_i * s_i(theta)`` aggregated with verl's ``agg_loss`` in ``seq-mean-token-mean``
  with ``global_batch_info``, so that its sum over micro-batches and data-parallel ranks is
  ``-(1/n_valid_groups) sum_i c_i s_i(theta)``, whose gradient is ConSPO's.
- ``compute_score``: a reward function for ``reward.custom_reward_function`` backed by conspo's
  process-isolated verifier.

ConSPO's hyperparameters are read from ``algorithm.conspo`` (added with ``+algorithm.conspo.tau=10`` etc.);
see :class:`VerlConSPOOptions` and ``docs/integrations.md``. Exact when ``ppo_epochs=1`` and
``ppo_mini_batch_size == data.train_batch_size`` (one optimizer step per batch): later mini-batches reuse
the credit computed before the first one.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import numpy as np
import torch
from verl.trainer.ppo.core_algos import agg_loss, register_adv_est, register_policy_loss

from conspo.objectives import ConSPO, RolloutBatch, ScoreObjective, get_objective, hyperparameter_field
from conspo.objectives.conspo import MarginKind

__all__ = [
    "TESTED_VERL_VERSIONS",
    "ConSPOTrainerSync",
    "VerlConSPOOptions",
    "compute_conspo_advantage",
    "compute_policy_loss_conspo_seq",
    "compute_score",
    "group_ids_from_index",
    "step_context",
]

TESTED_VERL_VERSIONS = ("==0.9.1",)
"""The verl versions this plugin is tested with (``scripts/make_verl_env.sh`` installs the same)."""

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------- options


CONSPO_OPTIONS = ("tau", "margin", "margin_max", "margin_warmup", "credit")
"""The :class:`ConSPO` hyperparameters ``algorithm.conspo`` sets (``credit`` = ``credit_kind``)."""


@dataclass(frozen=True)
class VerlConSPOOptions:
    """ConSPO's options in verl, read from the ``algorithm.conspo`` mapping (all optional)."""

    objective: str = "conspo"
    """Registered score objective on log-prob scores (``conspo`` today; ratio objectives are refused)."""
    # ConSPO's own options: default and help from `dataclasses.fields(ConSPO)`, so they cannot drift.
    tau: float = hyperparameter_field(ConSPO, "tau")
    margin: MarginKind = hyperparameter_field(ConSPO, "margin")
    margin_max: float = hyperparameter_field(ConSPO, "margin_max")
    margin_warmup: float = hyperparameter_field(ConSPO, "margin_warmup")
    credit: Literal["infonce", "linear"] = hyperparameter_field(ConSPO, "credit")
    """``credit_kind`` of :class:`ConSPO` (its alias)."""
    label_threshold: float = 0.5
    """A rollout is positive when its summed token-level reward is > this (INFERRED; works for 1/0 and +-1)."""

    @classmethod
    def from_config(cls, config: Any) -> VerlConSPOOptions:
        """Options from an ``AlgoConfig`` / DictConfig / dict holding a ``conspo`` mapping (or None)."""
        section = _get(config, "conspo") if config is not None else None
        if section is None:
            return cls()
        names = {f.name for f in fields(cls)}
        items = dict(section.items()) if hasattr(section, "items") else {}
        unknown = sorted(set(items) - names)
        if unknown:
            raise ValueError(f"algorithm.conspo: unknown option(s) {unknown}; valid: {sorted(names)}")
        return cls(**items)

    def build_objective(self):
        """The conspo objective these options describe (validates every value)."""
        if self.objective != "conspo":
            objective = get_objective(self.objective)
        else:
            objective = get_objective("conspo", **{name: getattr(self, name) for name in CONSPO_OPTIONS})
        if not isinstance(objective, ScoreObjective) or objective.needs_old_logps:
            raise ValueError(
                f"algorithm.conspo.objective={self.objective!r}: the verl plugin needs a score objective on "
                "log-prob scores without importance ratios (its credit becomes the advantage), e.g. 'conspo'"
            )
        return objective


def _get(config: Any, key: str) -> Any:
    if isinstance(config, Mapping) or hasattr(config, "get"):
        try:
            return config.get(key)
        except Exception:  # a structured config without the key
            return getattr(config, key, None)
    return getattr(config, key, None)


# ----------------------------------------------------------------- step context (trainer -> estimator)


@dataclass
class _StepContext:
    old_log_probs: torch.Tensor | None = None
    global_step: int | None = None
    total_steps: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)


_local = threading.local()


def _current() -> _StepContext | None:
    return getattr(_local, "context", None)


@contextlib.contextmanager
def step_context(
    old_log_probs: torch.Tensor | None, global_step: int | None, total_steps: int | None
) -> Iterator[_StepContext]:
    """Make ``old_log_probs`` (rows in the batch's order) and the step visible to the ``conspo`` estimator."""
    previous = _current()
    context = _StepContext(old_log_probs, global_step, total_steps)
    _local.context = context
    try:
        yield context
    finally:
        _local.context = previous


def group_ids_from_index(index: Any) -> torch.Tensor:
    """verl's per-row group keys (``uid`` strings, any hashable) -> int64 group ids [B]."""
    keys = np.asarray(index, dtype=object)
    _, inverse = np.unique(keys.astype(str), return_inverse=True)
    return torch.as_tensor(inverse.reshape(-1), dtype=torch.long)


# -------------------------------------------------------------------------------- advantage estimator


@register_adv_est("conspo")
def compute_conspo_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    index: np.ndarray,
    config: Any = None,
    old_log_probs: torch.Tensor | None = None,
    global_step: int | None = None,
    total_steps: int | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """ConSPO credit as verl advantages [B, T]: ``A_i = c_i * B / n_valid_groups`` on every response token.

    ``c_i = dJ/ds_i`` (Lemma 2, Eq. 10, margin as in Eq. 13) from scores ``s_i`` = mean token
    ``old_log_probs``; rows of groups without both a positive and a negative get 0. ``old_log_probs`` and
    the step come from the arguments, else from :func:`step_context` (set by ``conspo_sync``). Progress is
    ``(global_step - 1) / total_steps`` (verl counts steps from 1). Returns (advantages, returns), equal.
    """
    context = _current()
    if old_log_probs is None and context is not None:
        old_log_probs = context.old_log_probs
    if old_log_probs is None:
        raise ValueError(
            "adv_estimator=conspo needs old_log_probs, which verl 0.9's estimator call does not pass: set "
            "trainer.v1.trainer_mode=conspo_sync (and VERL_USE_EXTERNAL_MODULES=conspo.integrations.verl)"
        )
    if old_log_probs.shape != response_mask.shape:
        raise ValueError(
            f"conspo: old_log_probs has shape {tuple(old_log_probs.shape)}, response_mask "
            f"{tuple(response_mask.shape)}; they must be the same rows in the same order"
        )
    if global_step is None and context is not None:
        global_step, total_steps = context.global_step, context.total_steps
    progress = 0.0
    if global_step is not None and total_steps:
        progress = min(max((global_step - 1) / total_steps, 0.0), 1.0)

    if config is not None and _get(config, "use_kl_in_reward"):
        raise ValueError(
            "adv_estimator=conspo labels rollouts from their rewards; algorithm.use_kl_in_reward=True would "
            "mix the KL penalty into them: set it to False (ConSPO has no KL term)"
        )
    options = VerlConSPOOptions.from_config(config)
    objective = options.build_objective()
    rewards = token_level_rewards.detach().float().sum(dim=-1)
    mask = response_mask.bool()
    labels = (rewards > options.label_threshold).long()
    labels[mask.sum(dim=-1) == 0] = -1  # an empty response has no score
    batch = RolloutBatch(
        token_logps=old_log_probs.detach().float(),
        mask=mask,
        group_ids=group_ids_from_index(index).to(rewards.device),
        rewards=rewards,
        labels=labels,
    )
    credit = objective.credit(batch, progress=progress)
    num_rows = rewards.shape[0]
    scale = num_rows / credit.normalizer["groups"].clamp(min=1)
    advantages = (credit.coef * scale).unsqueeze(-1) * response_mask.to(rewards.dtype)
    if context is not None:
        context.metrics = {name: float(value) for name, value in credit.metrics.items()}
    return advantages, advantages


# ---------------------------------------------------------------------------------------- policy loss

_AGG_MODE = "seq-mean-token-mean"


@register_policy_loss("conspo_seq")
def compute_policy_loss_conspo_seq(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = _AGG_MODE,
    config: Any = None,
    rollout_is_weights: torch.Tensor | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """Sequence-level policy gradient: per row ``-A_i * s_i(theta)``, s_i = mean token log-prob (Sec. 4.2).

    No importance ratio and no clipping, as in ConSPO's Eq. 13. ``seq-mean-token-mean`` is the score's own
    length normalization, so any other ``loss_agg_mode`` is refused. ``rollout_is_weights`` (verl's
    rollout-correction weights, when enabled) multiply the per-token terms.
    """
    if loss_agg_mode != _AGG_MODE:
        raise ValueError(
            f"loss_mode=conspo_seq needs actor_rollout_ref.actor.loss_agg_mode={_AGG_MODE} (the score is a "
            f"length-normalized log-prob), got {loss_agg_mode!r}"
        )
    per_token = -advantages * log_prob
    if rollout_is_weights is not None:
        per_token = per_token * rollout_is_weights
    batch_info = dict(getattr(config, "global_batch_info", None) or {}) if config is not None else {}
    loss = agg_loss(loss_mat=per_token, loss_mask=response_mask, loss_agg_mode=_AGG_MODE, **batch_info)
    with torch.no_grad():
        mask = response_mask.float()
        tokens = mask.sum().clamp(min=1)
        approx_kl = ((old_log_prob - log_prob) * mask).sum() / tokens
    return loss, {"actor/ppo_kl": approx_kl.item(), "actor/pg_clipfrac": 0.0, "actor/pg_clipfrac_lower": 0.0}


# --------------------------------------------------------------------------------- V1 trainer subclass


def _register_trainer():
    """Register ``conspo_sync`` when verl's V1 trainer (and TransferQueue) can be imported."""
    try:
        from verl.trainer.ppo.v1 import trainer_base
        from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
    except ImportError as error:  # e.g. TransferQueue missing: the estimator and loss still work
        logger.warning("conspo: verl V1 trainer unavailable (%s); conspo_sync not registered", error)
        return None

    @trainer_base.register_trainer("conspo_sync")
    class ConSPOTrainerSync(PPOTrainerSync):
        """verl's ``sync`` trainer whose ``_compute_advantage`` hands old_log_probs and the step to ``conspo``."""

        def _compute_advantage(self, batch, metrics):
            if str(self.config.algorithm.adv_estimator) != "conspo":
                return super()._compute_advantage(batch, metrics)
            # Same keys and order as the base method's own fetch, so rows line up with what it passes on.
            data = trainer_base.tq.kv_batch_get(
                keys=batch.keys,
                partition_id=batch.partition_id,
                select_fields=["old_log_probs", "response_mask"],
            )
            padded = data.to_padded_tensor()
            with step_context(
                padded["old_log_probs"], self.global_steps, self.total_training_steps
            ) as context:
                batch = super()._compute_advantage(batch, metrics)
            metrics.update(context.metrics)
            return batch

    ConSPOTrainerSync.__qualname__ = "ConSPOTrainerSync"
    return ConSPOTrainerSync


ConSPOTrainerSync = _register_trainer()


# -------------------------------------------------------------------------------------- reward function

_verifier = None
_verifier_lock = threading.Lock()


def _get_verifier():
    """One process-isolated verifier per process, started on first use and reused."""
    global _verifier
    with _verifier_lock:
        if _verifier is None:
            from conspo.rewards import MathVerifier

            _verifier = MathVerifier()
        return _verifier


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: dict | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """verl reward function: ``{"score": 1.0 | 0.0, "acc": bool, "pred": str}`` from conspo's verifier.

    Select with ``reward.custom_reward_function.path=<this file> reward.custom_reward_function.name=compute_score``.
    The check runs in a worker process with a hard wall-clock timeout (math-verify can hang).
    """
    verdict = _get_verifier().verify(solution_str, ground_truth)
    return {"score": float(verdict.reward), "acc": bool(verdict.correct), "pred": verdict.extracted or ""}
