"""Every registered objective against a deliberately naive, loop-based reference written from its equation.

The references loop over groups and rows in Python and use only per-row torch arithmetic, so they share
no code with the vectorized implementation. Values and gradients must agree on random, off-policy inputs.
"""

from __future__ import annotations

import math

import pytest
import torch

from conspo.objectives import RolloutBatch, get_objective, grpo_credit, grpo_discriminative_form


def random_batch(
    seed: int, sizes=(4, 5, 3, 6, 2, 1, 4), width: int = 9, with_ref: bool = False
) -> RolloutBatch:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randperm(100, generator=gen)[: len(sizes)] + 7
    group_ids = torch.cat([torch.full((n,), int(i)) for i, n in zip(ids, sizes)])
    perm = torch.randperm(group_ids.numel(), generator=gen)
    group_ids = group_ids[perm]
    rows = group_ids.numel()
    lengths = torch.randint(0, width + 1, (rows,), generator=gen)
    lengths[0] = width
    mask = torch.arange(width)[None, :] < lengths[:, None]
    token_logps = (-3.0 * torch.rand(rows, width, generator=gen)).requires_grad_(True)
    old = token_logps.detach() + 0.3 * torch.randn(rows, width, generator=gen)
    rewards = (torch.rand(rows, generator=gen) > 0.5).float()
    ref = token_logps.detach() + 0.2 * torch.randn(rows, width, generator=gen) if with_ref else None
    return RolloutBatch(token_logps, mask, group_ids, rewards, old_token_logps=old, ref_token_logps=ref)


# ---- naive references -----------------------------------------------------------------------------------


def groups_of(batch: RolloutBatch) -> list[list[int]]:
    """Valid groups (at least one positive and one negative), as lists of row indices."""
    found: dict[int, list[int]] = {}
    for i in range(batch.num_rows):
        found.setdefault(int(batch.group_ids[i]), []).append(i)
    valid = []
    for rows in found.values():
        labels = [int(batch.labels[i]) for i in rows]
        if 1 in labels and 0 in labels:
            valid.append(rows)
    return valid


def tokens(batch: RolloutBatch, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    keep = batch.mask[i].bool()
    return batch.token_logps[i][keep], batch.old_token_logps[i][keep]


def advantages(batch: RolloutBatch, rows: list[int], std: bool = True) -> list[float]:
    r = [float(batch.rewards[i]) for i in rows]
    mu = sum(r) / len(r)
    sd = math.sqrt(sum((x - mu) ** 2 for x in r) / len(r))
    return [(x - mu) / sd if std else x - mu for x in r]


def mean_or_zero(x: torch.Tensor) -> torch.Tensor:
    return x.sum() / max(x.numel(), 1)


def ppo_f(rho: torch.Tensor, adv: float, lo: float, hi: float) -> torch.Tensor:
    return torch.minimum(rho * adv, torch.clamp(rho, 1 - lo, 1 + hi) * adv)


def naive_group_mean(batch, row_value, std=True) -> torch.Tensor:
    """-mean over valid groups of (1/G) sum_i row_value(i, A_i)."""
    per_group = []
    for rows in groups_of(batch):
        adv = advantages(batch, rows, std)
        per_group.append(sum(row_value(i, a) for i, a in zip(rows, adv)) / len(rows))
    return -sum(per_group) / max(len(per_group), 1)


def naive_token_mean(batch, token_value) -> torch.Tensor:
    """-(sum over valid tokens of token_value) / number of valid tokens (DAPO, CISPO)."""
    total, count = 0.0, 0
    for rows in groups_of(batch):
        for i, a in zip(rows, advantages(batch, rows)):
            lp, old = tokens(batch, i)
            total = total + token_value(lp, old, a).sum()
            count += lp.numel()
    return -total / max(count, 1)


def ref_grpo(batch, eps=0.2, kl_coef=0.0):
    def row(i, a):
        lp, old = tokens(batch, i)
        value = mean_or_zero(ppo_f(torch.exp(lp - old), a, eps, eps))
        if kl_coef:
            ref = batch.ref_token_logps[i][batch.mask[i].bool()]
            value = value - kl_coef * mean_or_zero(torch.exp(ref - lp) - (ref - lp) - 1)
        return value

    return naive_group_mean(batch, row)


def ref_dr_grpo(batch, eps=0.2):
    width = batch.token_logps.shape[1]
    return naive_group_mean(
        batch,
        lambda i, a: ppo_f(torch.exp(tokens(batch, i)[0] - tokens(batch, i)[1]), a, eps, eps).sum() / width,
        std=False,
    )


def ref_dapo(batch, lo=0.2, hi=0.28):
    return naive_token_mean(batch, lambda lp, old, a: ppo_f(torch.exp(lp - old), a, lo, hi))


def ref_gspo(batch, lo=3e-4, hi=4e-4):
    def row(i, a):
        lp, old = tokens(batch, i)
        s = torch.exp(mean_or_zero(lp - old))
        return torch.minimum(s * a, torch.clamp(s, 1 - lo, 1 + hi) * a)

    return naive_group_mean(batch, row)


def ref_gmpo(batch, eps=0.4):
    def row(i, a):
        lp, old = tokens(batch, i)
        lr = lp - old
        clipped = torch.minimum(lr, lr.clamp(-eps, eps)) if a > 0 else torch.maximum(lr, lr.clamp(-eps, eps))
        return torch.exp(mean_or_zero(clipped)) * a

    return naive_group_mean(batch, row)


def ref_cispo(batch, hi=4.0):
    return naive_token_mean(
        batch, lambda lp, old, a: torch.clamp(torch.exp(lp - old), max=1 + hi).detach() * a * lp
    )


def ref_sapo(batch, tau_pos=1.0, tau_neg=1.05):
    def row(i, a):
        lp, old = tokens(batch, i)
        t = tau_pos if a > 0 else tau_neg
        return mean_or_zero(torch.sigmoid(t * (torch.exp(lp - old) - 1)) * 4 / t * a)

    return naive_group_mean(batch, row)


def seq_score(batch, i):
    return mean_or_zero(tokens(batch, i)[0])


def ref_disco(batch, tau=10.0, delta=1e-4, beta=1e3, negatives="lse"):
    per_group, kl_total, kl_count = [], 0.0, 0
    for rows in groups_of(batch):
        pos = [seq_score(batch, i) for i in rows if int(batch.labels[i]) == 1]
        neg = [seq_score(batch, i) for i in rows if int(batch.labels[i]) == 0]
        if negatives == "lse":
            neg_term = tau * torch.log(sum(torch.exp(s / tau) for s in neg) / len(neg))
        else:
            neg_term = sum(neg) / len(neg)
        per_group.append(sum(pos) / len(pos) - neg_term)
        for i in rows:
            lp, old = tokens(batch, i)
            log_rho = lp - old
            kl_total = kl_total + (torch.exp(log_rho) - log_rho - 1).sum()
            kl_count += lp.numel()
    loss = -sum(per_group) / max(len(per_group), 1)
    kl = kl_total / max(kl_count, 1)
    return loss + 0.5 * beta * torch.clamp(kl - delta, min=0) ** 2


def ref_conspo(batch, tau=10.0, margin=0.0, linear=False):
    per_group = []
    for rows in groups_of(batch):
        pos = [seq_score(batch, i) for i in rows if int(batch.labels[i]) == 1]
        neg = [seq_score(batch, i) for i in rows if int(batch.labels[i]) == 0]
        if linear:
            per_group.append(sum(s - margin for s in pos) / len(pos) - sum(neg) / len(neg))
            continue
        terms = []
        for s in pos:
            logits = torch.stack([(s - margin) / tau] + [t / tau for t in neg])
            terms.append(tau * (logits[0] - torch.logsumexp(logits, 0)))
        per_group.append(sum(terms) / len(terms))
    return -sum(per_group) / max(len(per_group), 1)


CASES = [
    ("grpo", {}, ref_grpo),
    ("dr_grpo", {}, ref_dr_grpo),
    ("dapo", {}, ref_dapo),
    ("gspo", {}, ref_gspo),
    ("gmpo", {}, ref_gmpo),
    ("cispo", {}, ref_cispo),
    ("sapo", {}, ref_sapo),
    ("disco", {}, ref_disco),
    ("disco", {"negatives": "mean"}, lambda b: ref_disco(b, negatives="mean")),
    ("conspo", {"margin": "none"}, ref_conspo),
    ("conspo", {"margin": "fixed"}, lambda b: ref_conspo(b, margin=0.01)),
    ("conspo", {"credit": "linear", "margin": "fixed"}, lambda b: ref_conspo(b, margin=0.01, linear=True)),
]


@pytest.mark.parametrize("name,hparams,reference", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("seed", [0, 1])
def test_objective_matches_naive_reference(name, hparams, reference, seed):
    batch = random_batch(seed)
    objective = get_objective(name, **hparams)
    out = objective(batch, progress=0.5)
    expected = reference(batch)
    (grad,) = torch.autograd.grad(out.loss, batch.token_logps)
    (grad_ref,) = torch.autograd.grad(expected, batch.token_logps)
    torch.testing.assert_close(out.loss.detach(), expected.detach().float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-7)
    assert grad.abs().sum() > 0


def test_disco_penalty_is_active_on_off_policy_data():
    batch = random_batch(3)
    out = get_objective("disco")(batch)
    assert out.metrics["disco/kl"] > 1e-4 and out.metrics["disco/penalty"] > 0
    no_penalty = get_objective("disco", beta=0.0)(batch)
    assert not torch.allclose(out.loss, no_penalty.loss)


def test_grpo_kl_to_reference_matches_reference():
    batch = random_batch(4, with_ref=True)
    out = get_objective("grpo", kl_coef=0.04)(batch)
    expected = ref_grpo(batch, kl_coef=0.04)
    torch.testing.assert_close(out.loss.detach(), expected.detach().float(), rtol=1e-5, atol=1e-6)
    assert not torch.allclose(out.loss, get_objective("grpo")(batch).loss)


def test_dapo_clip_higher_options_change_the_loss():
    batch = random_batch(5)
    wide = get_objective("dapo", eps_low=0.2, eps_high=0.6)(batch).loss
    torch.testing.assert_close(
        wide.detach(), ref_dapo(batch, 0.2, 0.6).detach().float(), rtol=1e-5, atol=1e-6
    )
    assert not torch.allclose(wide, get_objective("dapo")(batch).loss)


def test_clip_fraction_counts_clipped_tokens():
    batch = random_batch(6)
    out = get_objective("grpo")(batch)
    assert 0.0 < float(out.metrics["ratio/clip_frac"]) < 1.0
    on_policy = RolloutBatch(batch.token_logps, batch.mask, batch.group_ids, batch.rewards)
    assert float(get_objective("grpo")(on_policy).metrics["ratio/clip_frac"]) == 0.0


# ---- Prop. 1 / Lemma 1 ------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grpo_surrogate_equals_discriminative_form_per_group(seed):
    """Prop. 1 / Eq. 7: per group, GRPO's clipped surrogate (no KL, population std) = sqrt(p(1-p)) (s+ - s-)."""
    batch = random_batch(seed)
    values, ids = grpo_discriminative_form(batch, clip_eps=0.2)
    grpo = get_objective("grpo", clip_eps=0.2)
    checked = 0
    for gid, value in zip(ids.tolist(), values):
        rows = (batch.group_ids == gid).nonzero().flatten()
        group = batch.select(rows)
        labels = group.labels.tolist()
        if not (1 in labels and 0 in labels):
            assert value == 0
            continue
        torch.testing.assert_close(-grpo(group).loss.detach(), value, rtol=1e-5, atol=1e-6)
        checked += 1
    assert checked >= 2


def test_grpo_gradient_is_lemma1_credit_on_policy():
    """Lemma 1: on-policy (unclipped), dJ/d log pi_t = c_i / |o_i| with c = +-sqrt(p(1-p))/N+-, per valid group."""
    batch = random_batch(7)
    on_policy = RolloutBatch(batch.token_logps, batch.mask, batch.group_ids, batch.rewards)
    loss = get_objective("grpo")(on_policy).loss
    (grad,) = torch.autograd.grad(-loss, batch.token_logps)
    coef = grpo_credit(on_policy.labels, on_policy.group_ids)
    valid_groups = len(groups_of(on_policy))
    lengths = on_policy.mask.sum(-1).clamp(min=1)
    expected = (coef / lengths / valid_groups)[:, None] * on_policy.mask
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)


def test_dapo_overlong_reward_penalty():
    from conspo.objectives import overlong_reward_penalty

    lengths = torch.tensor([100, 16384, 18432, 20480, 30000])
    penalty = overlong_reward_penalty(lengths, max_length=20480, cache_length=4096)
    torch.testing.assert_close(penalty, torch.tensor([0.0, 0.0, -0.5, -1.0, -1.0]))
    with pytest.raises(ValueError, match="cache_length"):
        overlong_reward_penalty(lengths, max_length=100, cache_length=200)
