"""ConSPO's credit (Lemma 2, Eq. 10-12), its margin (Eq. 13 and the schedule), and its Table 6 ablations."""

from __future__ import annotations

import math

import pytest
import torch

from conspo.objectives import (
    RolloutBatch,
    autograd_credit,
    get_objective,
    group_index,
    infonce_credit,
    infonce_objective,
    margin_schedule,
)


def scores_and_groups(seed: int):
    gen = torch.Generator().manual_seed(seed)
    group_ids = torch.tensor([5, 5, 5, 5, 5, 2, 2, 2, 9, 9, 9, 9, 9, 9, 4, 4, 8])
    labels = torch.tensor([1, 0, 0, 1, 0, 0, 1, 0, 1, 1, 1, 0, 0, 1, 1, 1, 0])
    perm = torch.randperm(len(group_ids), generator=gen)
    scores = -2.0 * torch.rand(len(group_ids), generator=gen)
    return scores, labels[perm], group_ids[perm]


@pytest.mark.parametrize("tau,margin", [(10.0, 0.0), (10.0, 0.01), (0.5, 0.2), (0.05, 0.0)])
def test_lemma2_analytic_coefficients_equal_autograd(tau, margin):
    scores, labels, group_ids = scores_and_groups(0)
    gi = group_index(group_ids, labels)
    coef, diag = infonce_credit(scores.double(), labels, group_ids, tau=tau, margin=margin)
    auto, per_group = autograd_credit(lambda s: infonce_objective(s, gi, tau, margin), scores.double())
    torch.testing.assert_close(coef, auto, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(diag["objective"], per_group, rtol=1e-6, atol=1e-9)


def test_lemma2_coefficients_match_eq10_written_out():
    """Eq. 10 by hand on one group: c+ = (1 - P+)/N+, c- = -(1/N+) sum_i P_ij-, margin inside P (Eq. 13)."""
    scores = torch.tensor([-0.3, -0.5, -0.5, -0.4, -0.7], dtype=torch.float64)
    labels = torch.tensor([1, 0, 0, 1, 0])
    tau, m = 10.0, 0.01
    coef, diag = infonce_credit(scores, labels, torch.zeros(5, dtype=torch.long), tau=tau, margin=m)
    neg = scores[labels == 0]
    expected = torch.zeros(5, dtype=torch.float64)
    for i in (0, 3):
        z = math.exp((scores[i] - m) / tau) + torch.exp(neg / tau).sum()
        expected[i] = (1 - math.exp((scores[i] - m) / tau) / z) / 2
        for j, s_j in zip((1, 2, 4), neg):
            expected[j] -= (torch.exp(s_j / tau) / z) / 2
        assert diag["p_pos"][i] == pytest.approx(float(math.exp((scores[i] - m) / tau) / z))
    torch.testing.assert_close(coef, expected)


def test_lemma2_coefficients_sum_to_zero_per_group_and_vanish_on_invalid_groups():
    scores, labels, group_ids = scores_and_groups(1)
    coef, _ = infonce_credit(scores, labels, group_ids)
    for gid in torch.unique(group_ids):
        in_group = group_ids == gid
        assert abs(float(coef[in_group].sum())) < 1e-6  # Eq. 11
        group_labels = labels[in_group]
        if not ((group_labels == 1).any() and (group_labels == 0).any()):
            assert torch.all(coef[in_group] == 0)
    assert (coef[labels == 1] >= 0).all() and (coef[labels == 0] <= 0).all()


def test_eq12_ratio_of_two_negatives_coefficients():
    scores, labels, group_ids = scores_and_groups(2)
    tau = 2.0
    coef, _ = infonce_credit(scores, labels, group_ids, tau=tau, margin=0.05)
    for gid in torch.unique(group_ids):
        negs = ((group_ids == gid) & (labels == 0)).nonzero().flatten()
        has_pos = bool(((group_ids == gid) & (labels == 1)).any())
        if len(negs) < 2 or not has_pos:
            continue
        j, k = negs[0], negs[1]
        expected = math.exp((scores[j] - scores[k]) / tau)
        assert float(coef[j] / coef[k]) == pytest.approx(expected, rel=1e-5)


def test_coupled_conspo_gradient_equals_lemma2_chain_rule():
    """d loss / d log pi_t = -c_i / |o_i| / n_valid_groups: a REINFORCE weight per rollout (Sec. 5.2)."""
    gen = torch.Generator().manual_seed(3)
    group_ids = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2])
    rewards = torch.tensor([1.0, 0, 0, 0, 1, 1, 0, 1, 1])
    mask = torch.ones(9, 6, dtype=torch.bool)
    mask[1, 4:] = False
    token_logps = (-torch.rand(9, 6, generator=gen)).requires_grad_(True)
    batch = RolloutBatch(token_logps, mask, group_ids, rewards)
    objective = get_objective("conspo", tau=1.0)
    out = objective(batch, progress=0.5)
    (grad,) = torch.autograd.grad(out.loss, token_logps)
    credit = objective.credit(batch, progress=0.5)
    expected = -(credit.coef / mask.sum(-1) / 2.0)[:, None] * mask
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)
    assert out.metrics["groups/valid_frac"] == pytest.approx(2 / 3)
    assert out.metrics["conspo/margin"] == pytest.approx(margin_schedule(0.5))
    assert float(out.metrics["conspo/coef_sum"]) < 1e-6
    assert 0 < float(out.metrics["conspo/p_pos"]) < 1


def test_margin_raises_the_bar_for_positives():
    """With the margin inside Eq. 13, a positive keeps more credit (lower P+) than without."""
    scores = torch.tensor([-0.2, -0.5, -0.6])
    labels = torch.tensor([1, 0, 0])
    gids = torch.zeros(3, dtype=torch.long)
    no_margin, d0 = infonce_credit(scores, labels, gids, tau=0.1, margin=0.0)
    margin, d1 = infonce_credit(scores, labels, gids, tau=0.1, margin=0.2)
    assert d1["p_pos"][0] < d0["p_pos"][0]
    assert margin[0] > no_margin[0]


def test_margin_schedule_values():
    M, alpha = 0.01, 0.3
    assert margin_schedule(0.0, "cosine", M, alpha) == 0.0
    assert margin_schedule(alpha, "cosine", M, alpha) == pytest.approx(M)
    assert margin_schedule(0.8, "cosine", M, alpha) == pytest.approx(M)
    assert margin_schedule(1.0, "cosine", M, alpha) == pytest.approx(M)
    assert margin_schedule(alpha / 2, "cosine", M, alpha) == pytest.approx(M / 2)
    values = [margin_schedule(x / 100 * alpha, "cosine", M, alpha) for x in range(101)]
    assert all(b > a for a, b in zip(values, values[1:]))
    assert margin_schedule(0.5, "fixed", M, alpha) == M
    assert margin_schedule(0.0, "fixed", M, alpha) == M
    assert margin_schedule(0.9, "none", M, alpha) == 0.0
    assert margin_schedule(1.2, "cosine", M, alpha) == pytest.approx(M)  # clamped
    # Negative progress is clamped to 0 (margin 0), not mirrored: cos is even, so an unclamped -x gives m(x) > 0.
    for progress in (-0.1, -alpha / 2, -1.0):
        assert margin_schedule(progress, "cosine", M, alpha) == 0.0


@pytest.mark.parametrize(
    "kwargs,field",
    [
        ({"target": -0.1}, "target"),
        ({"warmup": 0.0}, "warmup"),
        ({"warmup": 1.5}, "warmup"),
        ({"kind": "linear"}, "kind"),
    ],
)
def test_margin_schedule_rejects_bad_values(kwargs, field):
    with pytest.raises(ValueError, match=field):
        margin_schedule(0.5, **kwargs)


def test_ablations_are_configuration_of_one_objective():
    gen = torch.Generator().manual_seed(4)
    group_ids = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    rewards = torch.tensor([1.0, 0, 1, 0, 0, 1, 0])
    token_logps = (-torch.rand(7, 5, generator=gen)).requires_grad_(True)
    old = token_logps.detach() + 0.3 * torch.randn(7, 5, generator=gen)
    batch = RolloutBatch(token_logps, torch.ones(7, 5), group_ids, rewards, old_token_logps=old)
    full = get_objective("conspo")
    assert type(get_objective("conspo:credit=linear")) is type(full)
    assert not full.needs_old_logps and get_objective("conspo", score="clipped_ratio").needs_old_logps
    specs = (
        "conspo",
        "conspo:credit=linear",
        "conspo:score=clipped_ratio",
        "conspo:margin=none",
        "conspo:margin=fixed",
    )
    early = {spec: float(get_objective(spec)(batch, progress=0.1).loss.detach()) for spec in specs}
    assert len(set(early.values())) == len(specs)  # each ablation changes the objective
    # Once the warm-up is over the cosine margin has reached M: it equals the fixed margin.
    late = {spec: float(get_objective(spec)(batch, progress=0.9).loss.detach()) for spec in specs}
    assert late["conspo:margin=fixed"] == pytest.approx(late["conspo"])
    assert late["conspo:margin=none"] != pytest.approx(late["conspo"])
