"""KVCacheGenerator against HFGenerator and the model's own distribution (tiny testbed Llama, CPU, seconds)."""

from __future__ import annotations

import pytest
import torch

from conspo.rollout import (
    GENERATION_BACKENDS,
    GenerationBackend,
    HFGenerator,
    KVCacheGenerator,
    SamplingParams,
    build_completion_batch,
    completion_logprobs,
    make_generator,
)
from conspo.testbed import TinyModelConfig, build_char_tokenizer, build_tiny_model
from rollout_support import assert_rollout_contract

PROMPTS = ["<s>Q:1+1\nA:", "<s>Q:12+30\nA:", "<s>7", "<s>Q: what is 345+678?\nA:"]  # 4 lengths: left padding


@pytest.fixture(scope="module")
def tokenizer():
    return build_char_tokenizer()


def tiny(tokenizer, seed: int = 0, bias: torch.Tensor | None = None, logits_are_bias: bool = False):
    """A small testbed Llama; ``bias`` is added to its logits (a forward hook, so every backend sees it)."""
    model = build_tiny_model(
        tokenizer,
        TinyModelConfig(hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_positions=256),
        seed=seed,
    )
    if logits_are_bias:
        with torch.no_grad():
            model.model.norm.weight.zero_()  # hidden state 0: the logits are exactly the bias
    if bias is not None:

        def add_bias(module, args, output):
            output.logits = output.logits + bias.to(output.logits.dtype)
            return output

        model.register_forward_hook(add_bias)
    return model


def eos_bias(tokenizer, eos: float) -> torch.Tensor:
    bias = torch.zeros(len(tokenizer))
    bias[[tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id]] = -100.0
    bias[tokenizer.eos_token_id] = eos
    return bias


def ids(rollouts) -> list[tuple]:
    return [(r.prompt_index, r.prompt_ids, r.completion_ids, r.text, r.truncated) for r in rollouts]


def test_greedy_matches_hf_generator(tokenizer):
    # With a small EOS bias these random models end the prompts' greedy completions after 1-13 tokens or
    # not at all, so rows finish at different steps and (compact=True) are dropped from the cache mid-chunk.
    params = SamplingParams(temperature=0, max_new_tokens=12)
    for seed in (4, 6):
        model = tiny(tokenizer, seed=seed, bias=eos_bias(tokenizer, 0.5))
        for batch_size in (3, 8):
            ref = ids(
                HFGenerator(model, tokenizer, batch_size=batch_size).generate(PROMPTS, n=2, params=params)
            )
            for compact in (True, False):
                generator = KVCacheGenerator(model, tokenizer, batch_size=batch_size, compact=compact)
                assert ids(generator.generate(PROMPTS, n=2, params=params)) == ref, (
                    seed,
                    batch_size,
                    compact,
                )
        lengths = [len(r[2]) for r in ref]
        assert {r[4] for r in ref} == {True, False} and len(set(lengths)) > 2, "the test needs mixed endings"


def test_greedy_tokens_are_the_argmax_of_completion_logprobs_layout(tokenizer):
    # Same position ids as completion_logprobs (left padding counted out): every greedy token is the argmax
    # of the scoring forward's logits at its position.
    model = tiny(tokenizer, seed=4, bias=eos_bias(tokenizer, 2.0))
    out = KVCacheGenerator(model, tokenizer, batch_size=8).generate(
        PROMPTS, n=1, params=SamplingParams(temperature=0, max_new_tokens=10)
    )
    batch = build_completion_batch(out, pad_token_id=tokenizer.pad_token_id)
    with torch.no_grad():
        logits = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
        ).logits[:, batch.prompt_width - 1 : -1]
    argmax = logits.argmax(-1)
    assert torch.equal(argmax[batch.completion_mask], batch.completion_ids[batch.completion_mask])


def test_one_step_frequencies_match_softmax_and_top_p(tokenizer):
    vocab = len(tokenizer)
    bias = torch.full((vocab,), -100.0)
    support = torch.tensor([10, 20, 30, 40, 50])
    bias[support] = torch.tensor([1.0, 0.5, 0.0, -0.5, -1.5])
    model = tiny(tokenizer, bias=bias, logits_are_bias=True)
    rows, temperature = 4000, 0.7
    generator = KVCacheGenerator(model, tokenizer, batch_size=rows)

    def frequencies(top_p: float) -> torch.Tensor:
        params = SamplingParams(temperature=temperature, top_p=top_p, max_new_tokens=1, seed=0)
        out = generator.generate(["<s>x"], n=rows, params=params)
        assert all(len(r.completion_ids) == 1 for r in out)
        tokens = torch.tensor([r.completion_ids[0] for r in out])
        assert set(tokens.tolist()) <= set(support.tolist())
        return torch.stack([(tokens == t).float().mean() for t in support])

    def assert_matches(freq: torch.Tensor, expected: torch.Tensor) -> None:
        # Each frequency within 5 binomial standard deviations of its own probability, sqrt(p (1 - p) / n):
        # 0.0096 for p = 0.015, so a sampler that never draws the rarest token fails; tokens outside the
        # nucleus (p = 0) must never be drawn.
        bound = 5 * torch.sqrt(expected * (1 - expected) / rows)
        assert torch.all((freq - expected).abs() <= bound), f"{freq} vs {expected} (bound {bound})"

    probs = torch.softmax(bias[support] / temperature, dim=0)
    assert probs.min() < 0.02  # the rarest token is rare: its bound is far below its probability
    assert_matches(frequencies(1.0), probs)
    # top_p = 0.8: the nucleus is the smallest top set with mass >= 0.8 (here the top 3), renormalized.
    nucleus = int((probs.cumsum(0) < 0.8).sum()) + 1
    assert 1 < nucleus < len(support)
    expected = torch.zeros_like(probs)
    expected[:nucleus] = probs[:nucleus] / probs[:nucleus].sum()
    assert_matches(frequencies(0.8), expected)


def test_sampling_matches_hf_draws_and_logprobs_are_finite(tokenizer):
    # Same logits, the same fp32 softmax and one multinomial per step over the same rows: with compact=False
    # the draws are HFGenerator's, token for token (a check on the whole distribution, steps included).
    model = tiny(tokenizer, seed=5, bias=eos_bias(tokenizer, 2.0))
    for params in (
        SamplingParams(temperature=1.0, max_new_tokens=10, seed=3),
        SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=10, seed=4),
    ):
        ref = HFGenerator(model, tokenizer, batch_size=6).generate(PROMPTS, n=3, params=params)
        out = KVCacheGenerator(model, tokenizer, batch_size=6, compact=False).generate(
            PROMPTS, n=3, params=params
        )
        assert ids(out) == ids(ref)
        compacted = KVCacheGenerator(model, tokenizer, batch_size=6).generate(PROMPTS, n=3, params=params)
        with torch.no_grad():
            logps, mask = completion_logprobs(
                model, compacted, pad_token_id=tokenizer.pad_token_id, temperature=params.temperature
            )
        assert mask.any() and torch.isfinite(logps[mask]).all()


def test_top_p_keeps_only_the_nucleus(tokenizer):
    vocab = len(tokenizer)
    bias = torch.linspace(0.0, 1.0, vocab)
    bias[tokenizer.eos_token_id] = -100.0
    model = tiny(tokenizer, bias=bias, logits_are_bias=True)
    generator = KVCacheGenerator(model, tokenizer, batch_size=64)
    out = generator.generate(["<s>x"], n=64, params=SamplingParams(max_new_tokens=8, seed=1))
    assert len({t for r in out for t in r.completion_ids}) > 70  # no hidden top-k
    probs = torch.softmax(bias, dim=0)
    order = probs.argsort(descending=True)
    keep = set(order[: int((probs[order].cumsum(0) < 0.2).sum()) + 1].tolist())
    out = generator.generate(["<s>x"], n=64, params=SamplingParams(max_new_tokens=8, top_p=0.2, seed=1))
    sampled = {t for r in out for t in r.completion_ids}
    assert sampled <= keep and len(sampled) > 1


def test_eos_kept_truncation_flags_order_and_mode(tokenizer):
    eos = tokenizer.eos_token_id
    model = tiny(tokenizer, bias=eos_bias(tokenizer, 2.5))
    model.train()
    generator = KVCacheGenerator(model, tokenizer, batch_size=5)  # 12 rows: chunks of 5, 5, 2
    assert isinstance(generator, GenerationBackend)
    out = generator.generate(PROMPTS[:3], n=4, params=SamplingParams(max_new_tokens=6, seed=0))
    assert model.training, "generate must restore the model's previous mode"
    assert_rollout_contract(out, tokenizer, PROMPTS[:3], n=4, max_new_tokens=6)

    forced = tiny(tokenizer, bias=eos_bias(tokenizer, 100.0)).eval()
    out = KVCacheGenerator(forced, tokenizer).generate(PROMPTS, n=2, params=SamplingParams(max_new_tokens=5))
    assert all(r.completion_ids == [eos] and r.text == "" and not r.truncated for r in out)
    assert not forced.training
    never = tiny(tokenizer, bias=eos_bias(tokenizer, -100.0))
    out = KVCacheGenerator(never, tokenizer).generate(PROMPTS, n=2, params=SamplingParams(max_new_tokens=5))
    assert all(len(r.completion_ids) == 5 and r.truncated for r in out)


def test_finished_rows_get_pad_then_are_dropped_and_the_loop_stops_early(tokenizer):
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    model = tiny(tokenizer, seed=6, bias=eos_bias(tokenizer, 0.5))  # greedy lengths 4, 5, 13
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[3]]
    fed: list[torch.Tensor] = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: fed.append(kwargs["input_ids"].clone()), with_kwargs=True
    )
    params = SamplingParams(temperature=0, max_new_tokens=40)
    out = KVCacheGenerator(model, tokenizer, batch_size=8, compact=False).generate(
        prompts, n=2, params=params
    )
    longest = max(len(r.completion_ids) for r in out)
    assert not any(r.truncated for r in out) and longest < 40
    assert len(fed) == longest  # prefill + one step per token after the first; none once all have finished
    for row, r in enumerate(out):
        for step in range(len(r.completion_ids), longest - 1):  # inputs after the row's EOS
            assert fed[step + 1][row, 0].item() == pad
        assert r.completion_ids[-1] == eos
    fed.clear()
    again = KVCacheGenerator(model, tokenizer, batch_size=8).generate(prompts, n=2, params=params)
    assert ids(again) == ids(out)
    sizes = [x.shape[0] for x in fed]
    assert sizes[0] == 6 and sizes[-1] == 2 and sizes == sorted(sizes, reverse=True)


def test_seed_reproducible_and_rng_restored(tokenizer):
    model = tiny(tokenizer)
    generator = KVCacheGenerator(model, tokenizer, batch_size=5)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = generator.generate(PROMPTS, n=3, params=SamplingParams(max_new_tokens=6, seed=7))
    assert torch.equal(torch.get_rng_state(), state), "a seeded call must not consume the global RNG"
    b = generator.generate(PROMPTS, n=3, params=SamplingParams(max_new_tokens=6, seed=7))
    c = generator.generate(PROMPTS, n=3, params=SamplingParams(max_new_tokens=6, seed=8))
    assert ids(a) == ids(b) and ids(a) != ids(c)


class PastKeyValuesLM(torch.nn.Module):
    """A causal LM in the older style: ``past_key_values=`` instead of ``cache=``, no ``logits_to_keep``."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner
        self.config = inner.config
        self.generation_config = inner.generation_config

    def forward(
        self, input_ids, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None
    ):
        return self.inner(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=past_key_values,
            use_cache=use_cache,
        )


def test_models_taking_past_key_values(tokenizer):
    model = tiny(tokenizer, seed=2, bias=eos_bias(tokenizer, 2.0))
    params = SamplingParams(temperature=0, max_new_tokens=10)
    ref = HFGenerator(model, tokenizer, batch_size=8).generate(PROMPTS, n=2, params=params)
    out = KVCacheGenerator(PastKeyValuesLM(model), tokenizer, batch_size=8).generate(
        PROMPTS, n=2, params=params
    )
    assert ids(out) == ids(ref)


def test_make_generator_by_name(tokenizer):
    model = tiny(tokenizer)
    assert set(GENERATION_BACKENDS) == {"hf", "kv_cache", "vllm"}
    progress: list[tuple[int, int]] = []
    generator = make_generator(
        model, tokenizer, backend="kv_cache", batch_size=4, progress=lambda d, t: progress.append((d, t))
    )
    assert type(generator) is KVCacheGenerator and generator.batch_size == 4
    assert isinstance(generator, GenerationBackend)
    generator.generate(PROMPTS, n=2, params=SamplingParams(max_new_tokens=2, seed=0))
    assert progress == [(4, 8), (8, 8)]
    assert type(make_generator(model, tokenizer)) is HFGenerator
    with pytest.raises(ValueError, match="unknown generation backend 'sglang'.*hf, kv_cache, vllm"):
        make_generator(model, tokenizer, backend="sglang")
    with pytest.raises(ValueError, match="KVCacheGenerator batch_size"):
        make_generator(model, tokenizer, backend="kv_cache", batch_size=0)
    with pytest.raises(ValueError, match="n must be"):
        generator.generate(PROMPTS, n=0, params=SamplingParams())
