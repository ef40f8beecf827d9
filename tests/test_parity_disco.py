"""conspo's `disco` against the DisCO authors' own loss functions, KL constraint on.

The authors' code is not packaged, so the functions below are a faithful transcription (single-process
branch; only `verl_F.masked_mean` is inlined) of

    github.com/Optimization-AI/DisCO @ bd2b078129347a87c10fbb64df12ed50dce59947
    verl/verl/trainer/ppo/core_algos.py
      compute_policy_loss_discob_Lratio  lines 240-325   (DisCO-b, L-ratio score)
      compute_policy_loss_discob_logL    lines 328-413   (DisCO-b, log-L score)
      compute_policy_loss_disco_Lratio   lines 416-513   (DisCO, L-ratio score)
      compute_policy_loss_disco_logL     lines 516-611   (DisCO, log-L score)
    verl/verl/utils/torch_functional.py  masked_mean, lines 107-109

The two `*_Lratio` functions differ from their `*_logL` twins in one line only (the score: lines 291 / 468
`(ratio * mask).sum(1) / mask.sum(1)` instead of lines 380 / 569 `(log_prob * mask).sum(1) / mask.sum(1)`),
so each pair is transcribed once with a `ratio_score` switch. The authors' scripts
(scripts/train/run_disco*_8k.sh) pass `ppo_kl_type=kl` (k1), `delta=1e-4`, `beta=1e3`, `tau=10` (log-L) or
`tau=1` (L-ratio); the functions' own default `kl_type` is `low_var_kl` (k3), tested here too.

Conventions that differ on purpose (docs/objectives.md, "Conventions against the peers"): the authors'
VALUES are gradient surrogates -- the constraint is `sg(beta [D - delta]_+) * D` where conspo reports the
penalty `(beta/2) [D - delta]_+^2`, and the log-sum-exp term is `S / (sg(S) + eps)` (value ~1) where conspo
reports tau * log mean exp. Gradients are compared as they are; values after converting those two terms.
"""

from __future__ import annotations

import pytest
import torch

from conspo.objectives import RolloutBatch, get_objective

# ---- the authors' functions (transcribed) ------------------------------------------------------------------


def masked_mean(values, mask, axis=None):
    # verl/verl/utils/torch_functional.py:107-109
    return (values * mask).sum(axis=axis) / mask.sum(axis=axis)


def authors_discob(
    old_log_prob,
    log_prob,
    eos_mask,
    uid,
    seq_level_rewards,
    delta,
    beta,
    kl_type="low_var_kl",
    ratio_score=False,
):
    """compute_policy_loss_discob_logL (core_algos.py:328-413); ratio_score: ..._discob_Lratio (240-325)."""
    global_old_log_prob = old_log_prob
    global_log_prob = log_prob
    global_eos_mask = eos_mask
    global_uid = uid
    global_rewards = seq_level_rewards

    negative_approx_kl = global_log_prob - global_old_log_prob
    ratio = torch.exp(negative_approx_kl)
    if kl_type == "low_var_kl":
        ppo_kl = masked_mean(-negative_approx_kl + ratio - 1, global_eos_mask)
    elif kl_type == "kl":
        ppo_kl = masked_mean(-negative_approx_kl, global_eos_mask)

    if ratio_score:
        global_scores = (ratio * global_eos_mask).sum(dim=1) / global_eos_mask.sum(dim=1)
    else:
        global_scores = (global_log_prob * global_eos_mask).sum(dim=1) / global_eos_mask.sum(dim=1)
    sorted_uid, indices = global_uid.sort()
    sorted_scores = global_scores[indices]
    sorted_rewards = global_rewards[indices]

    num_questions = global_uid.unique().numel()
    num_responses_per_question = global_uid.size(0) // num_questions
    grouped_scores = sorted_scores.view(num_questions, num_responses_per_question)
    grouped_rewards = sorted_rewards.view(num_questions, num_responses_per_question)

    pos_mask = grouped_rewards == 1
    neg_mask = grouped_rewards == 0
    valid_mask = (pos_mask.sum(dim=1) != 0) & (neg_mask.sum(dim=1) != 0)

    if valid_mask.sum() > 0:
        grouped_scores = grouped_scores[valid_mask]
        grouped_rewards = grouped_rewards[valid_mask]
        pos_mask = pos_mask[valid_mask]
        neg_mask = neg_mask[valid_mask]

        neg_mean = (grouped_scores * neg_mask).sum(dim=1, keepdim=True) / neg_mask.sum(dim=1, keepdim=True)
        pg_losses = ((grouped_scores - neg_mean) * pos_mask).sum(dim=1, keepdim=True) / pos_mask.sum(
            dim=1, keepdim=True
        )
        pg_loss = pg_losses.sum() / num_questions
    else:
        pg_loss = torch.tensor(0.0) * global_scores.mean()

    constraint = torch.maximum(beta * (ppo_kl - delta), torch.zeros_like(ppo_kl)).detach() * ppo_kl

    pg_loss = -pg_loss + constraint
    pg_clipfrac = torch.gt(ppo_kl, delta).float()
    return pg_loss, pg_clipfrac, ppo_kl


def authors_disco(
    old_log_prob,
    log_prob,
    eos_mask,
    uid,
    seq_level_rewards,
    delta,
    beta,
    tau,
    kl_type="low_var_kl",
    ratio_score=False,
):
    """compute_policy_loss_disco_logL (core_algos.py:516-611); ratio_score: ..._disco_Lratio (416-513)."""
    global_old_log_prob = old_log_prob
    global_log_prob = log_prob
    global_eos_mask = eos_mask
    global_uid = uid
    global_rewards = seq_level_rewards

    negative_approx_kl = global_log_prob - global_old_log_prob
    ratio = torch.exp(negative_approx_kl)
    if kl_type == "low_var_kl":
        ppo_kl = masked_mean(-negative_approx_kl + ratio - 1, global_eos_mask)
    elif kl_type == "kl":
        ppo_kl = masked_mean(-negative_approx_kl, global_eos_mask)

    if ratio_score:
        global_scores = (ratio * global_eos_mask).sum(dim=1) / global_eos_mask.sum(dim=1)
    else:
        global_scores = (global_log_prob * global_eos_mask).sum(dim=1) / global_eos_mask.sum(dim=1)
    sorted_uid, indices = global_uid.sort()
    sorted_scores = global_scores[indices]
    sorted_rewards = global_rewards[indices]

    num_questions = global_uid.unique().numel()
    num_responses_per_question = global_uid.size(0) // num_questions
    grouped_scores = sorted_scores.view(num_questions, num_responses_per_question)
    grouped_rewards = sorted_rewards.view(num_questions, num_responses_per_question)

    pos_mask = grouped_rewards == 1
    neg_mask = grouped_rewards == 0
    valid_mask = (pos_mask.sum(dim=1) != 0) & (neg_mask.sum(dim=1) != 0)

    if valid_mask.sum() > 0:
        grouped_scores = grouped_scores[valid_mask]
        grouped_rewards = grouped_rewards[valid_mask]
        pos_mask = pos_mask[valid_mask]
        neg_mask = neg_mask[valid_mask]

        neg_scores_masked = (grouped_scores / tau).masked_fill(~neg_mask, float("-inf"))
        neg_max, _ = neg_scores_masked.max(dim=-1, keepdim=True)
        neg_max = torch.where(neg_max == float("-inf"), torch.zeros_like(neg_max), neg_max)
        neg_exp = torch.exp(((grouped_scores / tau) - neg_max.detach()) * neg_mask) * neg_mask
        neg_sum_exp = neg_exp.sum(dim=-1, keepdim=True)
        neg_logmeanexp = neg_sum_exp / (neg_sum_exp.detach() + torch.finfo(neg_sum_exp.dtype).eps)

        pg_losses = ((grouped_scores - tau * neg_logmeanexp) * pos_mask).sum(
            dim=1, keepdim=True
        ) / pos_mask.sum(dim=1, keepdim=True)
        pg_loss = pg_losses.sum() / num_questions
    else:
        pg_loss = torch.tensor(0.0) * global_scores.mean()

    constraint = torch.maximum(beta * (ppo_kl - delta), torch.zeros_like(ppo_kl)).detach() * ppo_kl

    pg_loss = -pg_loss + constraint
    pg_clipfrac = torch.gt(ppo_kl, delta).float()
    return pg_loss, pg_clipfrac, ppo_kl


# ---- inputs --------------------------------------------------------------------------------------------------

GROUPS, G, T = 5, 6, 7


def make_inputs(seed: int):
    """5 questions x 6 responses, shuffled; two valid groups of different pass rates, one all-correct, one
    all-wrong, one with a single positive; float64; the policy has drifted from pi_old (constraint active)."""
    gen = torch.Generator().manual_seed(seed)
    uid = torch.tensor([11, 3, 42, 7, 25]).repeat_interleave(G)
    rewards = torch.tensor(
        [[1, 0, 0, 1, 1, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [1, 1, 1, 1, 0, 1]],
        dtype=torch.float64,
    ).flatten()
    perm = torch.randperm(GROUPS * G, generator=gen)
    uid, rewards = uid[perm], rewards[perm]
    lengths = torch.randint(2, T + 1, (GROUPS * G,), generator=gen)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).double()
    log_prob = -2.0 * torch.rand(GROUPS * G, T, generator=gen, dtype=torch.float64)
    # Mostly lost probability on the sampled tokens (k1 > delta), with some tokens gaining it.
    old = log_prob + 0.2 * torch.randn(GROUPS * G, T, generator=gen, dtype=torch.float64) + 0.05
    return log_prob, old, mask, uid, rewards


def conspo_batch(log_prob, old, mask, uid, rewards) -> RolloutBatch:
    return RolloutBatch(log_prob, mask.bool(), uid, rewards, labels=rewards.long(), old_token_logps=old)


SETTINGS = [
    # (name, conspo options, authors' function, its keyword arguments)
    ("disco-logL-kl", {}, authors_disco, {"tau": 10.0, "kl_type": "kl"}),
    ("disco-logL-low_var_kl", {"kl_estimator": "low_var_kl"}, authors_disco, {"tau": 10.0}),
    (
        "disco-Lratio-kl",
        {"score": "ratio", "tau": 1.0},
        authors_disco,
        {"tau": 1.0, "kl_type": "kl", "ratio_score": True},
    ),
    ("discob-logL-kl", {"negatives": "mean"}, authors_discob, {"kl_type": "kl"}),
    ("discob-logL-low_var_kl", {"negatives": "mean", "kl_estimator": "k3"}, authors_discob, {}),
    (
        "discob-Lratio-kl",
        {"negatives": "mean", "score": "ratio"},
        authors_discob,
        {"kl_type": "kl", "ratio_score": True},
    ),
]


def lse_value_gap(objective, batch: RolloutBatch) -> torch.Tensor:
    """sum over valid groups of tau * (log mean exp(s-/tau) - 1): what the authors' `S / sg(S)` trick drops."""
    scores = objective.score(batch).detach()
    total = torch.zeros((), dtype=torch.float64)
    for gid in batch.group_ids.unique():
        rows = batch.group_ids == gid
        labels = batch.labels[rows]
        if not (labels == 1).any() or not (labels == 0).any():
            continue
        neg = scores[rows][labels == 0] / objective.tau
        lme = torch.logsumexp(neg, 0) - torch.log(torch.tensor(float(neg.numel()), dtype=torch.float64))
        total = total + objective.tau * (lme - 1.0)
    return total


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name,options,authors,kwargs", SETTINGS, ids=[s[0] for s in SETTINGS])
def test_disco_matches_the_authors_functions_with_the_constraint_on(name, options, authors, kwargs, seed):
    log_prob, old, mask, uid, rewards = make_inputs(seed)
    delta, beta = 1e-4, 1e3

    theirs_lp = log_prob.clone().requires_grad_(True)
    loss_theirs, _, ppo_kl = authors(old, theirs_lp, mask, uid, rewards, delta, beta, **kwargs)
    (grad_theirs,) = torch.autograd.grad(loss_theirs, theirs_lp)
    assert float(ppo_kl.detach()) > 10 * delta  # the constraint is active: the comparison covers it

    objective = get_objective("disco", delta=delta, beta=beta, **options)
    assert objective.normalize_over == "all"  # the authors' aggregation is the default
    ours_lp = log_prob.clone().requires_grad_(True)
    batch = conspo_batch(ours_lp, old, mask, uid, rewards)
    out = objective(batch)
    (grad_ours,) = torch.autograd.grad(out.loss, ours_lp)

    # The update: d(loss)/d(logp), as the authors backpropagate it.
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-6, atol=1e-12)
    assert grad_theirs.abs().sum() > 0
    # The constraint's D is the same estimate over the same tokens (every token of the batch).
    torch.testing.assert_close(out.metrics["disco/kl"].double(), ppo_kl.detach(), rtol=1e-9, atol=0.0)

    # The value, after the two documented conversions of the authors' surrogate values.
    hinge = torch.clamp(ppo_kl.detach() - delta, min=0.0)
    value = loss_theirs.detach() - beta * hinge * ppo_kl.detach() + 0.5 * beta * hinge**2
    if objective.negatives == "lse":
        value = value + lse_value_gap(objective, batch.detach()) / GROUPS
    torch.testing.assert_close(out.loss.detach().double(), value, rtol=1e-6, atol=1e-12)

    # The decomposed form on a shuffled split gives the same gradient.
    credit = objective.credit(batch.detach())
    perm = torch.randperm(GROUPS * G, generator=torch.Generator().manual_seed(seed + 7))
    dec_lp = log_prob.clone().requires_grad_(True)
    dec_batch = conspo_batch(dec_lp, old, mask, uid, rewards)
    total = sum(
        objective.loss(dec_batch.select(idx), credit.select(idx), normalizer=credit.normalizer).loss
        for idx in perm.chunk(4)
    )
    (grad_dec,) = torch.autograd.grad(total, dec_lp)
    torch.testing.assert_close(grad_dec, grad_theirs, rtol=1e-6, atol=1e-12)


def test_valid_group_normalization_is_not_the_authors():
    """The ConSPO paper's filtering (normalize_over="valid") differs from the authors' code: a named choice."""
    log_prob, old, mask, uid, rewards = make_inputs(0)
    lp = log_prob.clone().requires_grad_(True)
    loss, _, _ = authors_disco(old, lp, mask, uid, rewards, 1e-4, 1e3, tau=10.0, kl_type="kl")
    (grad_theirs,) = torch.autograd.grad(loss, lp)
    for options in ({"normalize_over": "valid"}, {"kl_estimator": "k3"}):
        ours = log_prob.clone().requires_grad_(True)
        out = get_objective("disco", **options)(conspo_batch(ours, old, mask, uid, rewards))
        (grad,) = torch.autograd.grad(out.loss, ours)
        assert not torch.allclose(grad, grad_theirs, rtol=1e-3, atol=0.0), options
