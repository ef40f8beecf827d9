"""Every registered objective against a deliberately naive, loop-based reference written from its equation.

The references loop over groups and rows in Python and use only per-row torch arithmetic, so they share
no code with the vectorized implementation. Values and gradients must agree on random, off-policy inputs.
"""

from __future__ import annotations

import math

import pytest
import torch

from conspo.objectives import RolloutBatch, get_objective, grpo_credit, grpo_discriminative_form
from conspo.objectives.grpo import clipped_surrogate


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


def all_groups_of(batch: RolloutBatch) -> list[list[int]]:
    """Every group, valid or not, as lists of row indices."""
    found: dict[int, list[int]] = {}
    for i in range(batch.num_rows):
        found.setdefault(int(batch.group_ids[i]), []).append(i)
    return list(found.values())


def kl_old(lp: torch.Tensor, old: torch.Tensor, estimator: str) -> torch.Tensor:
    """Per-token estimates of KL(pi_old || pi_theta): k1 = -log r, k2 = (log r)^2 / 2, k3 = r - 1 - log r."""
    log_rho = lp - old
    if estimator == "k1":
        return -log_rho
    if estimator == "k2":
        return 0.5 * log_rho**2
    return torch.exp(log_rho) - log_rho - 1


def ref_disco(batch, tau=10.0, delta=1e-4, beta=1e3, negatives="lse", estimator="k1", over="all"):
    per_group, kl_total, kl_count = [], 0.0, 0
    for rows in groups_of(batch):
        pos = [seq_score(batch, i) for i in rows if int(batch.labels[i]) == 1]
        neg = [seq_score(batch, i) for i in rows if int(batch.labels[i]) == 0]
        if negatives == "lse":
            neg_term = tau * torch.log(sum(torch.exp(s / tau) for s in neg) / len(neg))
        else:
            neg_term = sum(neg) / len(neg)
        per_group.append(sum(pos) / len(pos) - neg_term)
    # "valid": the constraint's token mean and the main term's divisor see only valid groups; "all": every one.
    counted = groups_of(batch) if over == "valid" else all_groups_of(batch)
    for rows in counted:
        for i in rows:
            lp, old = tokens(batch, i)
            kl_total = kl_total + kl_old(lp, old, estimator).sum()
            kl_count += lp.numel()
    loss = -sum(per_group) / max(len(counted), 1)
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
    ("disco", {"kl_estimator": "k2"}, lambda b: ref_disco(b, estimator="k2")),
    (
        "disco",
        {"kl_estimator": "low_var_kl", "normalize_over": "valid"},
        lambda b: ref_disco(b, estimator="k3", over="valid"),
    ),
    ("disco", {"kl_estimator": "k1", "normalize_over": "valid"}, lambda b: ref_disco(b, over="valid")),
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


def drifted_batch(seed: int) -> RolloutBatch:
    """pi_theta has lost probability on the sampled tokens: every KL estimate is positive."""
    batch = random_batch(seed)
    gen = torch.Generator().manual_seed(seed + 100)
    old = batch.token_logps.detach() + 0.3 * torch.randn(batch.token_logps.shape, generator=gen).abs()
    return RolloutBatch(batch.token_logps, batch.mask, batch.group_ids, batch.rewards, old_token_logps=old)


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_disco_penalty_is_active_on_off_policy_data(estimator):
    batch = drifted_batch(3)
    out = get_objective("disco", kl_estimator=estimator)(batch)
    assert out.metrics["disco/kl"] > 1e-4 and out.metrics["disco/penalty"] > 0
    no_penalty = get_objective("disco", beta=0.0)(batch)
    assert not torch.allclose(out.loss, no_penalty.loss)
    torch.testing.assert_close(
        out.loss.detach(), ref_disco(batch, estimator=estimator).detach(), rtol=1e-5, atol=1e-6
    )


def test_disco_estimators_differ_and_default_is_the_scripts_k1():
    """The DisCO scripts pass ppo_kl_type=kl (k1); verl's names map to the estimators they denote."""
    batch = drifted_batch(4)
    values = {
        est: float(get_objective("disco", kl_estimator=est)(batch).metrics["disco/kl"])
        for est in ("k1", "k2", "k3")
    }
    assert len(set(values.values())) == 3
    assert get_objective("disco").kl_estimator == "k1"
    assert float(get_objective("disco")(batch).metrics["disco/kl"]) == values["k1"]
    for name, canonical in (("kl", "k1"), ("mse", "k2"), ("low_var_kl", "k3")):
        assert get_objective(f"disco:kl_estimator={name}").kl_estimator == canonical
    with pytest.raises(ValueError, match="kl_estimator"):
        get_objective("disco", kl_estimator="k4")


def test_disco_k3_is_clamped_at_ten_as_verl():
    from conspo.objectives.disco import old_policy_kl

    logp = torch.tensor([[-1.0, -1.0, -1.0]])
    old = torch.tensor([[-1.0, -2.0, -20.0]])  # log r = 0, 1, 19: k3 = 0, e - 2, clamped 10
    torch.testing.assert_close(old_policy_kl(logp, old, "k3"), torch.tensor([[0.0, math.e - 2.0, 10.0]]))
    torch.testing.assert_close(old_policy_kl(logp, old, "k1"), torch.tensor([[0.0, -1.0, -19.0]]))


def ppo_f_bounded(rho, adv, lo, hi, delta=None, clip_c=None):
    """ppo_f with TRL's two-sided `delta` (cap the unclipped ratio) and verl's dual clip (A < 0: >= c A)."""
    unclipped = rho if delta is None else torch.clamp(rho, max=delta)
    value = torch.minimum(unclipped * adv, torch.clamp(rho, 1 - lo, 1 + hi) * adv)
    if clip_c is not None and adv < 0:
        value = torch.maximum(value, torch.full_like(value, clip_c * adv))
    return value


def ref_all_rows(batch, token_value, per_group_mean=True, kl_coef=0.0):
    """Every row counts (TRL / verl): per_group_mean -> mean over every group of its row mean of the token
    mean; else the sum over every token / the batch's token count. All-equal groups have advantage 0."""
    total, tokens_seen, per_group = 0.0, 0, []
    for rows in all_groups_of(batch):
        r = [float(batch.rewards[i]) for i in rows]
        mu = sum(r) / len(r)
        sd = math.sqrt(sum((x - mu) ** 2 for x in r) / len(r))
        group_total = 0.0
        for i, x in zip(rows, r):
            a = (x - mu) / sd if sd > 0 else 0.0
            keep = batch.mask[i].bool()
            lp, old = batch.token_logps[i][keep], batch.old_token_logps[i][keep]
            value = token_value(lp, old, a)
            if kl_coef:
                ref = batch.ref_token_logps[i][keep]
                value = value - kl_coef * (torch.exp(ref - lp) - (ref - lp) - 1)
            total = total + value.sum()
            tokens_seen += lp.numel()
            group_total = group_total + mean_or_zero(value)
        per_group.append(group_total / len(rows))
    if per_group_mean:
        return -sum(per_group) / len(per_group)
    return -total / max(tokens_seen, 1)


ALL_ROWS_CASES = [
    ("grpo", {}, lambda lp, old, a: ppo_f(torch.exp(lp - old), a, 0.2, 0.2), True),
    ("grpo", {"delta": 1.5}, lambda lp, old, a: ppo_f_bounded(torch.exp(lp - old), a, 0.2, 0.2, 1.5), True),
    (
        "grpo",
        {"clip_ratio_c": 1.3},
        lambda lp, old, a: ppo_f_bounded(torch.exp(lp - old), a, 0.2, 0.2, clip_c=1.3),
        True,
    ),
    ("dapo", {}, lambda lp, old, a: ppo_f(torch.exp(lp - old), a, 0.2, 0.28), False),
    (
        "dapo",
        {"delta": 1.4, "clip_ratio_c": 1.6},
        lambda lp, old, a: ppo_f_bounded(torch.exp(lp - old), a, 0.2, 0.28, 1.4, 1.6),
        False,
    ),
    ("cispo", {}, lambda lp, old, a: torch.clamp(torch.exp(lp - old), max=5.0).detach() * a * lp, False),
]


@pytest.mark.parametrize("kl_coef", [0.0, 0.05])
@pytest.mark.parametrize(
    "name,hparams,token_value,group_mean",
    ALL_ROWS_CASES,
    ids=[f"{c[0]}-{i}" for i, c in enumerate(ALL_ROWS_CASES)],
)
def test_normalize_over_all_rows_and_the_clip_bounds_match_reference(
    name, hparams, token_value, group_mean, kl_coef
):
    """normalize_over="all": every group / token counts, and rows of all-equal groups still carry their KL term."""
    batch = random_batch(8, with_ref=True)
    assert len(groups_of(batch)) < len(
        all_groups_of(batch)
    )  # some groups are all-correct / all-wrong / single
    objective = get_objective(name, normalize_over="all", kl_coef=kl_coef, **hparams)
    out = objective(batch)
    expected = ref_all_rows(batch, token_value, group_mean, kl_coef)
    (grad,) = torch.autograd.grad(out.loss, batch.token_logps)
    (grad_ref,) = torch.autograd.grad(expected, batch.token_logps)
    torch.testing.assert_close(out.loss.detach(), expected.detach().float(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_ref, rtol=1e-4, atol=1e-7)
    valid_only = get_objective(name, kl_coef=kl_coef, **hparams)(batch).loss
    assert not torch.allclose(out.loss, valid_only)


def test_delta_and_dual_clip_bind_on_negative_advantages_only():
    ratio = torch.tensor([0.5, 1.0, 2.0, 5.0])
    for adv in (1.0, -1.0):
        a = torch.tensor(adv)
        plain, _ = clipped_surrogate(ratio, a, 0.2, 0.2)
        for kwargs in ({"delta": 3.0}, {"clip_ratio_c": 3.0}):
            bounded, flags = clipped_surrogate(ratio, a, 0.2, 0.2, **kwargs)
            if adv > 0:
                torch.testing.assert_close(bounded, plain)
            else:  # only the ratio 5 > 3 token changes: its value is 3 A (not 5 A)
                torch.testing.assert_close(bounded, torch.tensor([-0.8, -1.0, -2.0, -3.0]))
                assert flags.tolist() == [True, False, False, True]
    with pytest.raises(ValueError, match="delta"):
        get_objective("grpo", delta=1.0)
    with pytest.raises(ValueError, match="clip_ratio_c"):
        get_objective("dapo:clip_ratio_c=0.5")
    with pytest.raises(ValueError, match="normalize_over"):
        get_objective("grpo", normalize_over="rows")


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
