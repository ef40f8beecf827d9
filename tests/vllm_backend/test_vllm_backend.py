"""rollout.backend=vllm on the testbed policy: the Rollout contract, greedy parity with HF, in-place weight sync.

One engine per module (starting one takes ~20 s on 2 cores); tests that change weights sync them back.
"""

from __future__ import annotations

import copy

import pytest
import torch

from conspo.data import render_prompt
from conspo.rollout import HFGenerator, SamplingParams, VLLMEngine, VLLMGenerator
from conspo.testbed import DEFAULT_TESTBED, load_testbed_policy, make_task
from rollout_support import assert_rollout_contract

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def policy(testbed_policy_dir):
    model, tokenizer = load_testbed_policy(testbed_policy_dir)
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def prompts(policy):
    _, tokenizer = policy
    task = make_task(DEFAULT_TESTBED.task, seed=0)
    return [render_prompt(p.problem, tokenizer, DEFAULT_TESTBED.template) for p in task.eval_problems(6)]


@pytest.fixture(scope="module")
def engine(policy):
    model, _ = policy
    engine = VLLMEngine(model, kv_cache_gb=0.05)
    yield engine
    engine.close()


@pytest.fixture
def generator(policy, engine):
    model, tokenizer = policy
    engine.sync_weights(model)  # a test before may have loaded other weights
    return VLLMGenerator(model, tokenizer, engine=engine)


def completions(rollouts) -> list[tuple[int, list[int], bool]]:
    return [(r.prompt_index, r.completion_ids, r.truncated) for r in rollouts]


def greedy(max_new_tokens: int = 24) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_new_tokens=max_new_tokens)


def test_rollout_contract_while_sampling(policy, prompts, generator):
    _, tokenizer = policy
    # 16 tokens (completions here are 15-18 long): some completions end with EOS, others are cut (the contract check needs both).
    out = generator.generate(prompts, n=4, params=SamplingParams(temperature=1.0, max_new_tokens=16, seed=3))
    assert_rollout_contract(out, tokenizer, prompts, n=4, max_new_tokens=16)
    assert len({tuple(r.completion_ids) for r in out}) > len(prompts), "samples of one prompt all equal"
    # Seeded: the same call gives the same samples, another seed other samples.
    again = generator.generate(
        prompts, n=4, params=SamplingParams(temperature=1.0, max_new_tokens=16, seed=3)
    )
    assert completions(again) == completions(out)
    other = generator.generate(
        prompts, n=4, params=SamplingParams(temperature=1.0, max_new_tokens=16, seed=4)
    )
    assert completions(other) != completions(out)


def test_greedy_matches_hf_and_sampler_logprobs_match_the_policy(policy, prompts, generator):
    from conspo.rollout import completion_logprobs

    model, tokenizer = policy
    out = generator.generate(prompts, n=1, params=greedy())
    ref = HFGenerator(model, tokenizer).generate(prompts, n=1, params=greedy())
    assert completions(out) == completions(ref)
    assert [r.text for r in out] == [r.text for r in ref]
    # The engine's per-token log-probs are those of the same policy: float32 kernels, tiny differences only.
    with torch.no_grad():
        logps, mask = completion_logprobs(model, out, pad_token_id=tokenizer.pad_token_id)
    for row, values in enumerate(generator.last_logprobs):
        assert len(values) == int(mask[row].sum())
        assert torch.allclose(torch.tensor(values), logps[row, : len(values)], atol=1e-3)


def test_weight_sync_in_place_after_an_update(policy, prompts, generator):
    """After the weights change, only a sync makes the engine agree with HF again (stale weights are caught)."""
    model, tokenizer = policy
    before = completions(generator.generate(prompts, n=1, params=greedy()))
    changed = copy.deepcopy(model)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in changed.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    hf_changed = completions(HFGenerator(changed, tokenizer).generate(prompts, n=1, params=greedy()))
    assert hf_changed != before, "the perturbation must change the greedy completions"
    # Not synced yet: the engine still has the old weights.
    assert completions(generator.generate(prompts, n=1, params=greedy())) == before
    generator.engine.sync_weights(changed)
    assert completions(generator.generate(prompts, n=1, params=greedy())) == hf_changed
    generator.engine.sync_weights(model)
    assert completions(generator.generate(prompts, n=1, params=greedy())) == before


def test_trainer_step_syncs_the_engine_and_reports_the_mismatch(tmp_path, testbed_policy_dir, prompts):
    """`conspo train rollout.backend=vllm`'s step: after the update the engine's greedy completions are the
    updated policy's (HF) ones, not the starting policy's; the mismatch metric is small and finite."""
    from trainer_support import make_trainer

    trainer = make_trainer(
        tmp_path,
        testbed_policy_dir,
        "rollout.backend=vllm",
        "rollout.vllm_kv_cache_gb=0.05",
        "optim.lr=3e-3",
        "optim.warmup_steps=0",
        "batch.prompts_per_step=8",
        "batch.group_size=8",
        "rollout.max_new_tokens=24",
    )
    try:
        start = completions(HFGenerator(trainer.model, trainer.tokenizer).generate(prompts, 1, greedy()))
        metrics = trainer.step()
        assert metrics["step/skipped"] == 0.0
        assert 0.0 <= metrics["rollout/logprob_mismatch"] < 1e-2
        generator = VLLMGenerator(trainer.model, trainer.tokenizer, engine=trainer._vllm_engine)
        hf = completions(HFGenerator(trainer.model, trainer.tokenizer).generate(prompts, 1, greedy()))
        assert hf != start, "the update must change the greedy completions (else the check below is empty)"
        assert completions(generator.generate(prompts, n=1, params=greedy())) == hf
    finally:
        trainer.close()
