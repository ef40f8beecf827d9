"""Per-row seeded sampling (conspo.rollout.seeded): the right distribution, one stream per row, both backends."""

from __future__ import annotations

import pytest
import torch

from conspo.rollout import HFGenerator, KVCacheGenerator, SamplingParams, row_uniforms, sample_from_uniforms
from conspo.testbed import TinyModelConfig, build_char_tokenizer, build_tiny_model


def test_inverse_cdf_draws_follow_softmax_and_top_p():
    logits = torch.full((1, 50), -100.0)
    support = torch.tensor([3, 11, 20, 31, 47])
    logits[0, support] = torch.tensor([1.0, 0.5, 0.0, -0.5, -1.5])
    rows, temperature = 4000, 0.7
    u = row_uniforms(range(rows), 1)[:, 0]

    def frequencies(top_p: float) -> torch.Tensor:
        params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=1)
        tokens = sample_from_uniforms(logits.expand(rows, -1), params, u)
        assert set(tokens.tolist()) <= set(support.tolist())
        return torch.stack([(tokens == t).float().mean() for t in support])

    probs = torch.softmax(logits[0, support] / temperature, dim=0)
    # 4000 draws: one standard deviation is <= 0.008, so 0.035 is over 4 sigma.
    torch.testing.assert_close(frequencies(1.0), probs, atol=0.035, rtol=0)
    nucleus = int((probs.cumsum(0) < 0.8).sum()) + 1
    expected = torch.zeros_like(probs)
    expected[:nucleus] = probs[:nucleus] / probs[:nucleus].sum()
    torch.testing.assert_close(frequencies(0.8), expected, atol=0.035, rtol=0)


def test_uniform_at_the_top_never_picks_an_impossible_token():
    logits = torch.tensor([[0.0, 0.0, -float("inf")]])
    params = SamplingParams(temperature=1.0, max_new_tokens=1)
    assert sample_from_uniforms(logits, params, torch.tensor([1.0])).tolist() == [1]
    assert sample_from_uniforms(logits, params, torch.tensor([0.0])).tolist() == [0]


def test_a_row_depends_on_its_seed_only_in_either_backend():
    torch.set_num_threads(1)
    tokenizer = build_char_tokenizer()
    config = TinyModelConfig(
        hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=64
    )
    model = build_tiny_model(tokenizer, config, seed=0)
    prompts = ["<s>12+3=", "<s>7+45=", "<s>1+1="]
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=10, seed=123)
    seeds = [11, 12, 13, 21, 22, 23, 31, 32, 33]

    def texts(generator, prompts, n, seeds):
        return [r.text for r in generator.generate(prompts, n, params, row_seeds=seeds)]

    together = texts(HFGenerator(model, tokenizer, batch_size=9), prompts, 3, seeds)
    assert len(set(together)) > 3
    one_by_one = [
        texts(HFGenerator(model, tokenizer, batch_size=1), [prompts[i // 3]], 1, [seeds[i]])[0]
        for i in range(9)
    ]
    assert one_by_one == together
    # The KV-cache loop drops finished rows from the batch: each row still draws from its own stream.
    assert texts(KVCacheGenerator(model, tokenizer, batch_size=4), prompts, 3, seeds) == together
    reordered = texts(
        HFGenerator(model, tokenizer, batch_size=2), prompts[::-1], 3, seeds[6:] + seeds[3:6] + seeds[:3]
    )
    assert reordered == together[6:] + together[3:6] + together[:3]
    with pytest.raises(ValueError, match="row_seeds has 2 seeds for 9 rows"):
        HFGenerator(model, tokenizer).generate(prompts, 3, params, row_seeds=[1, 2])
