"""conspo's baselines against verl's own registered policy losses (`get_policy_loss_fn`), run for real.

For every verl policy loss conspo has a twin of, with each `loss_agg_mode` the twin supports, on one
shuffled float64 batch split into micro-batches the way verl's actor calls the loss (each micro-batch with
the global batch info): the summed loss and d(loss)/d(logp) must match conspo's decomposed loss to 1e-6.

verl's advantages come from its own `grpo` estimator (unbiased std + 1e-6; `norm_adv_by_std_in_grpo=False`
for Dr. GRPO) and its counts (every row and token) are handed to both sides; conspo runs with
`normalize_over="all"`. Conventions that differ on purpose are in docs/objectives.md ("Conventions
against the peers"). verl's policy losses carry no KL-to-reference term (the actor adds `kl_loss`
separately), so KL is not part of this comparison; the KL estimators are checked against `kl_penalty`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

verl = pytest.importorskip("verl")
pytestmark = pytest.mark.verl

from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn, kl_penalty  # noqa: E402
from verl.workers.config import ActorConfig, PolicyLossConfig  # noqa: E402

from conspo.objectives import RolloutBatch, get_objective  # noqa: E402
from conspo.objectives.disco import old_policy_kl  # noqa: E402

GROUPS, G, T = 4, 6, 7


def make_rollouts(seed: int = 0):
    """4 questions x 6 rollouts (one all-correct group), rows shuffled, float64, strongly off-policy so that
    every clip (including verl's dual clip at ratio 3) binds somewhere."""
    gen = torch.Generator().manual_seed(seed)
    rows = GROUPS * G
    correct = torch.tensor(
        [[1, 0, 0, 1, 1, 0], [1, 1, 1, 1, 1, 1], [0, 0, 1, 0, 0, 0], [1, 1, 0, 1, 0, 1]], dtype=torch.float64
    ).flatten()
    lengths = torch.randint(1, T + 1, (rows,), generator=gen)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()
    log_prob = -2.0 * torch.rand(rows, T, generator=gen, dtype=torch.float64)
    old = log_prob + 0.6 * torch.randn(rows, T, generator=gen, dtype=torch.float64)
    token_level_rewards = torch.zeros(rows, T, dtype=torch.float64)
    token_level_rewards[torch.arange(rows), lengths - 1] = correct
    order = torch.randperm(rows, generator=gen)
    uid = np.array([f"q{i // G}" for i in range(rows)], dtype=object)[order.numpy()]
    return {
        "log_prob": log_prob[order],
        "old_log_prob": old[order],
        "response_mask": mask[order],
        "token_level_rewards": token_level_rewards[order],
        "uid": uid,
        "group_ids": torch.as_tensor([int(u[1:]) for u in uid]),
    }


def verl_advantages(rollouts, norm_by_std: bool) -> torch.Tensor:
    """verl's own GRPO estimator; returns one advantage per row."""
    adv, _ = get_adv_estimator_fn("grpo")(
        token_level_rewards=rollouts["token_level_rewards"],
        response_mask=rollouts["response_mask"],
        index=rollouts["uid"],
        norm_adv_by_std_in_grpo=norm_by_std,
    )
    return adv


# (id, verl loss_mode, loss_agg_mode, ActorConfig options, conspo objective, its options, std-normalized A)
CASES = [
    (
        "vanilla-seq-mean-token-mean",
        "vanilla",
        "seq-mean-token-mean",
        {},
        "grpo",
        {"clip_ratio_c": 3.0},
        True,
    ),
    (
        "vanilla-seq-mean-token-mean-dual-clip-1.5",
        "vanilla",
        "seq-mean-token-mean",
        {"clip_ratio_c": 1.5},
        "grpo",
        {"clip_ratio_c": 1.5},
        True,
    ),
    (
        "vanilla-token-mean",
        "vanilla",
        "token-mean",
        {"clip_ratio_low": 0.2, "clip_ratio_high": 0.28},
        "dapo",
        {"eps_low": 0.2, "eps_high": 0.28, "clip_ratio_c": 3.0},
        True,
    ),
    (
        "vanilla-seq-mean-token-sum-norm",
        "vanilla",
        "seq-mean-token-sum-norm",
        {"clip_ratio_c": 2.0},
        "dr_grpo",
        {"clip_eps": 0.2, "max_length": T, "clip_ratio_c": 2.0},
        False,
    ),
    (
        "vanilla-seq-mean-token-sum-norm-scale-factor",
        "vanilla",
        "seq-mean-token-sum-norm",
        {"loss_scale_factor": 16},
        "dr_grpo",
        {"clip_eps": 0.2, "max_length": 16, "clip_ratio_c": 3.0},
        False,
    ),
    (
        "gspo-seq-mean-token-mean",
        "gspo",
        "seq-mean-token-mean",
        {"clip_ratio_low": 0.05, "clip_ratio_high": 0.06},  # GSPO's 3e-4 / 4e-4 would clip every row here
        "gspo",
        {"eps_low": 0.05, "eps_high": 0.06},
        True,
    ),
    (
        "geo_mean",  # verl's geo_mean ignores loss_agg_mode: the mean over rows
        "geo_mean",
        "token-mean",
        {"clip_ratio_low": 0.4, "clip_ratio_high": 0.4},
        "gmpo",
        {"eps_low": 0.4, "eps_high": 0.4},
        True,
    ),
    (
        "cispo-token-mean",
        "cispo",
        "token-mean",
        {"clip_ratio_low": 0.5, "clip_ratio_high": 0.3},
        "cispo",
        {"eps_low": 0.5, "eps_high": 0.3},
        True,
    ),
    ("sapo", "sapo", "seq-mean-token-mean", {"tau_pos": 1.0, "tau_neg": 1.05}, "sapo", {}, True),
]


def actor_config(loss_mode: str, loss_agg_mode: str, options: dict) -> ActorConfig:
    return ActorConfig(
        strategy="fsdp",
        rollout_n=G,
        ppo_micro_batch_size_per_gpu=1,
        loss_agg_mode=loss_agg_mode,
        policy_loss=PolicyLossConfig(loss_mode=loss_mode),
        **options,
    )


MICRO_BATCHES = [slice(0, 5), slice(5, 13), slice(13, 24)]


@pytest.mark.parametrize(
    "case_id,loss_mode,agg,verl_options,name,options,norm_by_std", CASES, ids=[c[0] for c in CASES]
)
def test_conspo_matches_verls_policy_loss(case_id, loss_mode, agg, verl_options, name, options, norm_by_std):
    rollouts = make_rollouts()
    mask = rollouts["response_mask"]
    advantages = verl_advantages(rollouts, norm_by_std)
    config = actor_config(loss_mode, agg, verl_options)
    config.global_batch_info.update(
        dp_size=1,
        batch_num_tokens=int(mask.sum()),
        global_batch_size=mask.shape[0],
        loss_scale_factor=config.loss_scale_factor,
    )
    loss_fn = get_policy_loss_fn(loss_mode)
    theirs_lp = rollouts["log_prob"].clone().requires_grad_(True)
    # verl's geo_mean takes torch.mean over its call's rows and ignores the global batch info, so its sum over
    # micro-batches is not a batch mean: it matches conspo with one micro-batch per optimizer step only.
    micro_batches = [slice(0, GROUPS * G)] if loss_mode == "geo_mean" else MICRO_BATCHES
    theirs = 0.0
    for rows in micro_batches:
        loss, _ = loss_fn(
            old_log_prob=rollouts["old_log_prob"][rows],
            log_prob=theirs_lp[rows],
            advantages=advantages[rows],
            response_mask=mask[rows].bool(),
            loss_agg_mode=agg,
            config=config,
            rollout_is_weights=None,
        )
        theirs = theirs + loss
    (grad_theirs,) = torch.autograd.grad(theirs, theirs_lp)

    objective = get_objective(name, normalize_over="all", **options)
    ours_lp = rollouts["log_prob"].clone().requires_grad_(True)
    rewards = rollouts["token_level_rewards"].sum(-1)
    batch = RolloutBatch(
        ours_lp, mask.bool(), rollouts["group_ids"], rewards, old_token_logps=rollouts["old_log_prob"]
    )
    credit = objective.credit(batch.detach())
    assert credit.normalizer["sequences"] == config.global_batch_info["global_batch_size"]
    assert credit.normalizer["tokens"] == config.global_batch_info["batch_num_tokens"]
    credit.rows["advantages"] = advantages[:, 0]  # verl broadcasts the row's advantage over its tokens
    ours = sum(
        objective.loss(batch.select(rows), credit.select(rows), normalizer=credit.normalizer).loss
        for rows in micro_batches
    )
    (grad_ours,) = torch.autograd.grad(ours, ours_lp)

    torch.testing.assert_close(ours.detach().double(), theirs.detach(), rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-6, atol=1e-12)
    assert grad_theirs.abs().sum() > 0


def test_verls_dual_clip_binds_on_this_batch():
    """Without conspo's clip_ratio_c the GRPO twin of verl's vanilla loss differs: the comparison covers it."""
    rollouts = make_rollouts()
    ratio = torch.exp(rollouts["log_prob"] - rollouts["old_log_prob"])
    advantages = verl_advantages(rollouts, True)
    assert bool(((ratio > 3.0) & (advantages < 0) & rollouts["response_mask"].bool()).any())


def test_verl_advantages_are_conspos_rescaled_by_the_std_convention():
    """verl: (r - mean) / (unbiased std + 1e-6); conspo: population std, no epsilon."""
    rollouts = make_rollouts()
    rewards = rollouts["token_level_rewards"].sum(-1)
    theirs = verl_advantages(rollouts, True)[:, 0]
    batch = RolloutBatch(
        rollouts["log_prob"], rollouts["response_mask"].bool(), rollouts["group_ids"], rewards
    )
    ours = get_objective("grpo").credit(batch).advantages.double()
    scale = torch.empty_like(rewards)
    for gid in rollouts["group_ids"].unique():
        rows = rollouts["group_ids"] == gid
        scale[rows] = rewards[rows].std(unbiased=False) / (rewards[rows].std() + 1e-6)
    torch.testing.assert_close(ours * scale, theirs, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(
        get_objective("dr_grpo").credit(batch).advantages.double(), verl_advantages(rollouts, False)[:, 0]
    )


@pytest.mark.parametrize("estimator,verl_name", [("k1", "k1"), ("k2", "k2"), ("k3", "low_var_kl")])
def test_disco_kl_estimators_are_verls_kl_penalty(estimator, verl_name):
    """DisCO's estimate of KL(pi_old || pi_theta) is verl's `kl_penalty(logprob=old, ref_logprob=current)`,
    k3 with verl's clamp at 10 included (the row with log r = 19 hits it)."""
    rollouts = make_rollouts()
    current, old = rollouts["log_prob"], rollouts["old_log_prob"].clone()
    old[0, 0] = current[0, 0] - 19.0
    theirs = kl_penalty(logprob=old, ref_logprob=current, kl_penalty=verl_name)
    torch.testing.assert_close(old_policy_kl(current, old, estimator), theirs, rtol=1e-12, atol=1e-12)
