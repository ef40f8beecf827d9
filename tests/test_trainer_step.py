"""One RL step on the testbed: decomposed == coupled update, micro-batch invariance, skipped all-filtered batches."""

from __future__ import annotations

import json

import pytest
import torch

from conspo.rewards import RewardFunction, Verdict
from conspo.trainer.loop import Trainer
from conspo.trainer.rows import Rows, sequence_forward
from trainer_support import ParityVerifier, StandInVerifier, make_trainer


class FakeRewardFn(RewardFunction):
    """The trainer's reward function (shaping included) with a stand-in verifier: no worker processes."""

    def __init__(self, verifier, config=None):
        super().__init__(config)
        self.fake = verifier

    @property
    def verifier(self):
        return self.fake


@pytest.fixture()
def verifier():
    return ParityVerifier()


def _step_gradients(trainer: Trainer, verifier) -> tuple[list[torch.Tensor], dict[str, float]]:
    """Run one step and return the (synced, unclipped) gradient the optimizer stepped with."""
    grads: list[torch.Tensor] = []
    original = trainer.optimizer.step

    def capture(*args, **kwargs):
        grads.extend(p.grad.detach().clone() for p in trainer.model.parameters() if p.grad is not None)
        return original(*args, **kwargs)

    trainer.optimizer.step = capture
    trainer.reward_fn = FakeRewardFn(verifier)
    metrics = trainer.step()
    return grads, metrics


@pytest.mark.parametrize("objective", ["conspo", "grpo"])
def test_decomposed_update_equals_coupled_update(tmp_path, random_policy, verifier, objective):
    common = [f"objective.name={objective}", "optim.max_grad_norm=null", "seed=3"]
    coupled, m_c = _step_gradients(
        make_trainer(tmp_path / "c", random_policy, *common, "batch.update_mode=coupled"), verifier
    )
    # micro-batches of 2 rows split the groups of 4 (and mini-batches of 1 prompt in the second check)
    split, m_d = _step_gradients(
        make_trainer(
            tmp_path / "d", random_policy, *common, "batch.update_mode=decomposed", "batch.micro_batch_size=2"
        ),
        verifier,
    )
    assert m_c["groups/kept"] == m_d["groups/kept"] > 0, "the seed must give valid groups"
    assert len(coupled) == len(split) > 0
    norm = torch.sqrt(sum((g**2).sum() for g in coupled))
    assert norm > 0
    for a, b in zip(coupled, split):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_micro_batch_size_does_not_change_the_update(tmp_path, random_policy, verifier):
    common = ["optim.max_grad_norm=null", "seed=3", "batch.mini_batches=2"]
    whole, _ = _step_gradients(make_trainer(tmp_path / "a", random_policy, *common), verifier)
    split, _ = _step_gradients(
        make_trainer(tmp_path / "b", random_policy, *common, "batch.micro_batch_size=1"), verifier
    )
    assert len(whole) == len(split) > 0
    for a, b in zip(whole, split):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


class _AllCorrect(StandInVerifier):
    """A verifier that calls every completion correct: every group is all-correct."""

    def verify_batch(self, completions, answers):
        return [Verdict(reward=1.0, correct=True, extracted="1", reason="exact") for _ in completions]


def test_all_filtered_batch_is_skipped_and_logged(tmp_path, random_policy, monkeypatch):
    import conspo.rewards

    monkeypatch.setattr(conspo.rewards.reward_fn, "MathVerifier", _AllCorrect)
    trainer = make_trainer(
        tmp_path, random_policy, "steps=2", "eval.at_start=false", "checkpoint.save_final=false"
    )
    before = [p.detach().clone() for p in trainer.model.parameters()]
    result = trainer.run()
    assert result.steps_done == 2
    for a, b in zip(before, trainer.model.parameters()):
        assert torch.equal(a, b)  # nothing to learn from: no update
    rows = [json.loads(line) for line in (tmp_path / "t" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "step/skipped" in r]
    assert [r["step"] for r in train_rows] == [1, 2]
    assert all(r["step/skipped"] == 1.0 and r["groups/valid_frac"] == 0.0 for r in train_rows)
    assert all(r["groups/all_correct_frac"] == 1.0 for r in train_rows)


def test_row_subsets_score_like_the_full_batch(tmp_path, random_policy):
    """A micro-batch (rows sliced, padding trimmed) gives the same per-token log-probs as the full layout."""
    from conspo.rollout import Rollout

    trainer = make_trainer(tmp_path, random_policy)
    ids = trainer.tokenizer("12+34=")["input_ids"]
    rollouts = [
        Rollout(0, ids, [5, 6, 7], "", False),
        Rollout(0, ids[2:], [8], "", False),
        Rollout(1, ids[:3], [9, 10, 11, 12, 13], "", True),
    ]
    rows = Rows.from_rollouts(rollouts, [1.0, 0.0, 0.0], [1, 0, 0], [0, 0, 1], trainer.pad_id)
    with torch.no_grad():
        full, mask, _ = sequence_forward(trainer.model, rows.tokens)
        for idx in ([1], [0, 2], [2, 1]):
            part = rows.select(torch.tensor(idx))
            lp, m, _ = sequence_forward(trainer.model, part.tokens)
            T = lp.shape[1]
            torch.testing.assert_close(lp, full[idx, :T], rtol=1e-5, atol=1e-5)
            assert torch.equal(m, mask[idx, :T])
            assert int(mask[idx].sum(-1).max()) == T  # right padding trimmed


class _FirstRoundAllCorrect(ParityVerifier):
    """All-correct on the first call (no valid group), parity labels afterwards."""

    def __init__(self):
        self.calls = 0

    def verify_batch(self, completions, answers):
        self.calls += 1
        if self.calls == 1:
            return [Verdict(reward=1.0, correct=True, extracted="1", reason="exact") for _ in completions]
        return super().verify_batch(completions, answers)


def test_dynamic_sampling_samples_again_until_the_batch_has_valid_groups(tmp_path, random_policy):
    trainer = make_trainer(
        tmp_path, random_policy, "batch.dynamic_sampling=true", "batch.max_sampling_tries=4", "seed=3"
    )
    verifier = _FirstRoundAllCorrect()
    trainer.reward_fn = FakeRewardFn(verifier)
    metrics = trainer.step()
    rounds = verifier.calls
    assert rounds >= 2
    assert trainer.cursor == rounds * 4  # every round consumes P prompts
    assert metrics["step/skipped"] == 0.0
    assert 0 < metrics["groups/kept"] <= 4  # never more than P groups enter the update
    assert metrics["groups/valid_frac"] < 1.0  # the all-correct first round counts as sampled


def _count_update(trainer: Trainer) -> dict[str, int]:
    """Count the policy's forward calls inside the update (not generation) and the optimizer steps."""
    counts = {"forwards": 0, "optimizer_steps": 0}
    update, step = trainer._update, trainer.optimizer.step

    def forward_hook(*args):
        counts["forwards"] += 1

    def counting_update(*args, **kwargs):
        handle = trainer.model.register_forward_hook(forward_hook)
        try:
            return update(*args, **kwargs)
        finally:
            handle.remove()

    def counting_step(*args, **kwargs):
        counts["optimizer_steps"] += 1
        return step(*args, **kwargs)

    trainer._update = counting_update
    trainer.optimizer.step = counting_step
    return counts


@pytest.mark.parametrize(("objective", "mini_batches"), [("conspo", 1), ("grpo", 1), ("conspo", 2)])
def test_single_forward_update_equals_the_two_pass_update(
    tmp_path, random_policy, verifier, objective, mini_batches
):
    """One micro-batch per mini-batch: the credit from the gradient forward (one forward per optimizer step)
    gives exactly the update of a separate no-grad credit forward (two)."""
    common = [f"objective.name={objective}", f"batch.mini_batches={mini_batches}", "seed=3"]
    fused = make_trainer(tmp_path / "fused", random_policy, *common)
    two_pass = make_trainer(tmp_path / "two", random_policy, *common)
    two_pass.fuse_credit_forward = False
    results = []
    for trainer in (fused, two_pass):
        counts = _count_update(trainer)
        grads, metrics = _step_gradients(trainer, verifier)
        results.append((grads, metrics, counts))
    (g_fused, m_fused, c_fused), (g_two, m_two, c_two) = results
    assert m_fused["groups/kept"] == m_two["groups/kept"] > 0, "the seed must give valid groups"
    assert c_fused["optimizer_steps"] == c_two["optimizer_steps"] == mini_batches
    assert c_fused["forwards"] == c_fused["optimizer_steps"]  # one forward per optimizer step
    assert c_two["forwards"] == 2 * c_two["optimizer_steps"]  # no-grad credit forward + gradient forward
    assert len(g_fused) == len(g_two) > 0
    assert torch.sqrt(sum((g**2).sum() for g in g_fused)) > 0
    for a, b in zip(g_fused, g_two):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(fused.model.parameters(), two_pass.model.parameters()):
        assert torch.equal(a, b)  # the same update
    for key in m_fused:
        if not key.startswith(("time/", "perf/")):
            assert m_fused[key] == pytest.approx(m_two[key], rel=1e-6, abs=1e-9), key


def test_split_micro_batches_keep_the_separate_credit_forward(tmp_path, random_policy, verifier):
    trainer = make_trainer(tmp_path, random_policy, "seed=3", "batch.micro_batch_size=4")  # 16 rows: 4 micro
    counts = _count_update(trainer)
    _, metrics = _step_gradients(trainer, verifier)
    assert metrics["groups/kept"] > 0
    micro = int(metrics["groups/kept"]) * 4 // 4  # kept rows (G=4 per group) / micro_batch_size
    assert counts["optimizer_steps"] == 1
    assert counts["forwards"] == 2 * micro  # the no-grad credit pass, then the gradient pass, both chunked


def test_kv_cache_backend_generates_the_rollouts(tmp_path, random_policy, verifier, monkeypatch):
    from conspo.rollout import HFGenerator, KVCacheGenerator

    calls = {"kv": 0}
    original = KVCacheGenerator.generate

    def counting(self, *args, **kwargs):
        calls["kv"] += 1
        return original(self, *args, **kwargs)

    def forbidden(self, *args, **kwargs):
        raise AssertionError("rollout.backend=kv_cache must not call HF generate")

    monkeypatch.setattr(KVCacheGenerator, "generate", counting)
    monkeypatch.setattr(HFGenerator, "generate", forbidden)
    trainer = make_trainer(tmp_path, random_policy, "rollout.backend=kv_cache", "seed=3")
    trainer.reward_fn = FakeRewardFn(verifier)
    metrics = trainer.step()
    assert calls["kv"] >= 1
    assert metrics["groups/kept"] > 0
