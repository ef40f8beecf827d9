"""Decomposed == coupled, for every registered objective: same value and gradient, under permutation
and under any split of the rows into micro-batches normalized by the global counts."""

from __future__ import annotations

import pytest
import torch

from conspo.objectives import RolloutBatch, get_objective, list_objectives

SPECS = [
    *list_objectives(),
    "conspo:credit=linear",
    "conspo:score=clipped_ratio",
    "disco:score=ratio,tau=1",
    "disco:normalize_over=valid,kl_estimator=k3",
    "conspo:normalize_over=all",
    "grpo:normalize_over=all,delta=1.3,clip_ratio_c=1.2",
    "dr_grpo:normalize_over=all",
    "dapo:normalize_over=all,clip_ratio_c=1.5",
    "cispo:normalize_over=all",
]


def random_batch(seed: int, with_ref: bool = False) -> RolloutBatch:
    gen = torch.Generator().manual_seed(seed)
    sizes = torch.randint(1, 8, (6,), generator=gen)
    group_ids = torch.repeat_interleave(torch.randperm(1000, generator=gen)[:6], sizes)
    group_ids = group_ids[torch.randperm(group_ids.numel(), generator=gen)]
    rows, width = group_ids.numel(), 11
    lengths = torch.randint(0, width + 1, (rows,), generator=gen)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).float()
    token_logps = (-2.0 * torch.rand(rows, width, generator=gen)).requires_grad_(True)
    old = token_logps.detach() + 0.25 * torch.randn(rows, width, generator=gen)
    ref = token_logps.detach() + 0.1 * torch.randn(rows, width, generator=gen) if with_ref else None
    rewards = torch.randint(0, 2, (rows,), generator=gen).float()
    labels = rewards.long()
    labels[torch.rand(rows, generator=gen) < 0.1] = -1  # a few unverifiable rows
    return RolloutBatch(
        token_logps, mask, group_ids, rewards, labels, old_token_logps=old, ref_token_logps=ref
    )


def leaf_batch(batch: RolloutBatch, token_logps: torch.Tensor) -> RolloutBatch:
    return RolloutBatch(
        token_logps,
        batch.mask,
        batch.group_ids,
        batch.rewards,
        batch.labels,
        batch.old_token_logps,
        batch.ref_token_logps,
    )


def random_partition(rows: int, parts: int, gen: torch.Generator) -> list[torch.Tensor]:
    order = torch.randperm(rows, generator=gen)
    cuts = sorted(torch.randperm(rows - 1, generator=gen)[: parts - 1].add(1).tolist())
    return [chunk for chunk in torch.tensor_split(order, cuts) if chunk.numel()]


def decomposed(objective, batch: RolloutBatch, parts: list[torch.Tensor], progress: float):
    credit = objective.credit(batch.detach(), progress=progress)
    total = 0.0
    for idx in parts:
        total = (
            total + objective.loss(batch.select(idx), credit.select(idx), normalizer=credit.normalizer).loss
        )
    return total


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decomposed_equals_coupled_under_any_split(spec, seed):
    objective = get_objective(spec, kl_coef=0.05) if seed == 2 else get_objective(spec)
    batch = random_batch(seed, with_ref=seed == 2)
    progress = 0.1 * seed
    coupled = objective(batch, progress=progress).loss
    (grad_coupled,) = torch.autograd.grad(coupled, batch.token_logps)
    gen = torch.Generator().manual_seed(100 + seed)
    for parts in (1, 3, batch.num_rows):
        split = random_partition(batch.num_rows, parts, gen)
        total = decomposed(objective, batch, split, progress)
        (grad,) = torch.autograd.grad(total, batch.token_logps)
        torch.testing.assert_close(total.detach(), coupled.detach(), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, grad_coupled, rtol=1e-4, atol=1e-7)
    assert grad_coupled.abs().sum() > 0


@pytest.mark.parametrize("spec", SPECS)
def test_coupled_and_decomposed_are_invariant_to_row_order(spec):
    objective = get_objective(spec)
    batch = random_batch(5)
    loss = objective(batch, progress=0.4).loss
    (grad,) = torch.autograd.grad(loss, batch.token_logps)

    perm = torch.randperm(batch.num_rows, generator=torch.Generator().manual_seed(9))
    permuted = batch.select(perm)
    leaf = permuted.token_logps.detach().requires_grad_(True)
    permuted = leaf_batch(permuted, leaf)
    loss_p = objective(permuted, progress=0.4).loss
    (grad_p,) = torch.autograd.grad(loss_p, leaf)
    torch.testing.assert_close(loss_p.detach(), loss.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad_p, grad[perm], rtol=1e-4, atol=1e-7)

    halves = [torch.arange(0, batch.num_rows, 2), torch.arange(1, batch.num_rows, 2)]
    total = decomposed(objective, permuted, halves, 0.4)
    (grad_d,) = torch.autograd.grad(total, leaf)
    torch.testing.assert_close(grad_d, grad[perm], rtol=1e-4, atol=1e-7)


def test_normalizer_counts_only_valid_groups_and_sums_across_shards():
    """Two 'processes' each own whole groups; summing their normalizers reproduces the global loss."""
    objective = get_objective("conspo")
    batch = random_batch(3)
    coupled = objective(batch, progress=0.7).loss
    (grad_coupled,) = torch.autograd.grad(coupled, batch.token_logps)
    ids = torch.unique(batch.group_ids)
    shard_a = torch.isin(batch.group_ids, ids[: len(ids) // 2]).nonzero().flatten()
    shard_b = torch.isin(batch.group_ids, ids[len(ids) // 2 :]).nonzero().flatten()
    credits = [objective.credit(batch.select(s).detach(), progress=0.7) for s in (shard_a, shard_b)]
    global_norm = {k: credits[0].normalizer[k] + credits[1].normalizer[k] for k in credits[0].normalizer}
    total = sum(
        objective.loss(batch.select(s), c, normalizer=global_norm).loss
        for s, c in zip((shard_a, shard_b), credits)
    )
    (grad,) = torch.autograd.grad(total, batch.token_logps)
    torch.testing.assert_close(total.detach(), coupled.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_coupled, rtol=1e-4, atol=1e-7)
    # Local normalizers would be wrong: the test must be able to fail.
    local = sum(objective.loss(batch.select(s), c).loss for s, c in zip((shard_a, shard_b), credits))
    assert not torch.allclose(local, coupled)
