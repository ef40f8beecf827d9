"""Edge cases every objective must survive without NaN or exception, in both forms."""

from __future__ import annotations

import pytest
import torch

from conspo.objectives import RolloutBatch, get_objective, list_objectives

SPECS = [*list_objectives(), "conspo:score=clipped_ratio", "disco:score=ratio"]


def build(token_logps, group_ids, rewards, mask=None, old=None, labels=None) -> RolloutBatch:
    token_logps = token_logps.detach().requires_grad_(True)
    mask = torch.ones_like(token_logps, dtype=torch.bool) if mask is None else mask
    return RolloutBatch(token_logps, mask, torch.tensor(group_ids), torch.tensor(rewards), labels, old)


def check_finite(objective, batch: RolloutBatch, progress: float = 0.5):
    out = objective(batch, progress=progress)
    assert out.loss.requires_grad
    (grad,) = torch.autograd.grad(out.loss, batch.token_logps)
    assert torch.isfinite(out.loss) and torch.isfinite(grad).all()
    for key, value in out.metrics.items():
        assert value.dim() == 0 and torch.isfinite(value), key
    credit = objective.credit(batch.detach(), progress=progress)
    split = objective.loss(batch, credit, normalizer=credit.normalizer)
    (grad_split,) = torch.autograd.grad(split.loss, batch.token_logps)
    assert torch.isfinite(split.loss) and torch.isfinite(grad_split).all()
    return out.loss, grad


@pytest.mark.parametrize("spec", SPECS)
def test_no_valid_group_gives_zero_loss_that_backpropagates(spec):
    # all-correct, all-wrong and a singleton group: nothing to contrast.
    batch = build(-torch.rand(5, 4), [0, 0, 1, 1, 2], [1.0, 1.0, 0.0, 0.0, 1.0])
    loss, grad = check_finite(get_objective(spec), batch)
    assert float(loss.detach()) == 0.0
    assert torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("spec", SPECS)
def test_empty_responses_singletons_and_invalid_rows(spec):
    mask = torch.ones(6, 5, dtype=torch.bool)
    mask[1] = False  # an empty response inside a valid group
    labels = torch.tensor([1, 0, 0, -1, 1, 0])
    batch = build(
        -torch.rand(6, 5), [3, 3, 3, 3, 8, 9], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], mask=mask, labels=labels
    )
    objective = get_objective(spec)
    loss, grad = check_finite(objective, batch)
    assert torch.count_nonzero(grad[3:]) == 0  # the invalid row and the singleton groups get no gradient
    # Changing what is excluded changes nothing.
    moved = batch.token_logps.detach().clone()
    moved[3:] -= 5.0
    again = objective(
        build(moved, [3, 3, 3, 3, 8, 9], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0], mask=mask, labels=labels),
        progress=0.5,
    )
    torch.testing.assert_close(again.loss.detach(), loss.detach())


@pytest.mark.parametrize("spec", SPECS)
def test_extreme_log_probs(spec):
    token_logps = torch.full((4, 6), -1e4)
    token_logps[0, :3] = -0.1
    old = torch.full((4, 6), -0.5)
    old[2] = -1e4
    batch = build(token_logps, [0, 0, 0, 0], [1.0, 0.0, 1.0, 0.0], old=old)
    check_finite(get_objective(spec), batch)
    on_policy = build(token_logps, [0, 0, 0, 0], [1.0, 0.0, 1.0, 0.0])
    check_finite(get_objective(spec), on_policy)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("spec", SPECS)
def test_half_precision_inputs_reduce_in_fp32(spec, dtype):
    gen = torch.Generator().manual_seed(0)
    full = -torch.rand(8, 64, generator=gen)
    old = full + 0.05 * torch.randn(8, 64, generator=gen)
    group_ids, rewards = [0, 0, 0, 0, 1, 1, 1, 1], [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0]
    reference = get_objective(spec)(
        build(full.to(dtype).float(), group_ids, rewards, old=old.to(dtype).float()), progress=0.5
    )
    batch = build(full.to(dtype), group_ids, rewards, old=old.to(dtype))
    loss, grad = check_finite(get_objective(spec), batch)
    assert loss.dtype == torch.float32 and grad.dtype == dtype
    torch.testing.assert_close(loss.detach(), reference.loss.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("spec", SPECS)
def test_empty_batch(spec):
    token_logps = torch.zeros(0, 5, requires_grad=True)
    batch = RolloutBatch(token_logps, torch.zeros(0, 5), torch.zeros(0, dtype=torch.long), torch.zeros(0))
    objective = get_objective(spec)
    out = objective(batch)
    out.loss.backward()
    assert float(out.loss.detach()) == 0.0 and out.loss.requires_grad
    credit = objective.credit(batch)
    assert float(objective.loss(batch, credit).loss.detach()) == 0.0
