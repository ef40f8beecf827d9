"""HFGenerator and completion_logprobs on a tiny Llama built from a config (no hub, CPU, seconds)."""

from __future__ import annotations

import string

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from conspo.rollout import (
    GenerationBackend,
    HFGenerator,
    Rollout,
    SamplingParams,
    build_completion_batch,
    completion_logprobs,
)
from rollout_support import assert_rollout_contract

SPECIALS = {"pad_token": "<pad>", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}


def char_tokenizer() -> PreTrainedTokenizerFast:
    chars = "\n" + "".join(c for c in string.printable if c.isprintable())
    vocab = {tok: i for i, tok in enumerate([*SPECIALS.values(), *chars])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_special_tokens(list(SPECIALS.values()))
    return PreTrainedTokenizerFast(tokenizer_object=backend, clean_up_tokenization_spaces=False, **SPECIALS)


class BiasedLlama(LlamaForCausalLM):
    """A tiny Llama whose logits get a fixed bias: lets a test force or forbid EOS, or shape the distribution."""

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        if hasattr(self, "logit_bias"):
            out.logits = out.logits + self.logit_bias.to(out.logits.dtype)
        return out


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return char_tokenizer()


def tiny_llama(tokenizer, seed: int = 0, bias: torch.Tensor | None = None) -> BiasedLlama:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = BiasedLlama(config)
    if bias is not None:
        model.logit_bias = bias
    return model


PROMPTS = ["<s>Q:1+1\nA:", "<s>Q:12+30\nA:", "<s>Q:7\nA:"]


def test_sampling_params_validation():
    assert SamplingParams(temperature=0).greedy
    for bad in (
        {"temperature": -0.1},
        {"temperature": float("nan")},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"max_new_tokens": 0},
        {"max_new_tokens": 2.5},
        {"seed": "1"},
    ):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingParams(**bad)


def test_layout_order_and_truncation_flags(tokenizer):
    eos = tokenizer.eos_token_id
    bias = torch.zeros(len(tokenizer))
    bias[[tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id]] = -100.0
    bias[eos] = 2.5  # EOS likely but not certain: both endings occur
    model = tiny_llama(tokenizer, bias=bias)
    model.train()
    generator = HFGenerator(model, tokenizer, batch_size=4)  # 12 rows: chunks of 4, 4, 4; prompts split
    assert isinstance(generator, GenerationBackend)
    params = SamplingParams(temperature=1.0, max_new_tokens=6, seed=0)
    rollouts = generator.generate(PROMPTS, n=4, params=params)
    assert model.training, "generate must restore the model's previous mode"
    assert_rollout_contract(rollouts, tokenizer, PROMPTS, n=4, max_new_tokens=6)


def test_forced_eos_and_never_eos(tokenizer):
    eos = tokenizer.eos_token_id
    bias = torch.zeros(len(tokenizer))
    bias[eos] = 100.0
    model = tiny_llama(tokenizer, bias=bias).eval()
    out = HFGenerator(model, tokenizer).generate(PROMPTS, n=2, params=SamplingParams(max_new_tokens=5))
    assert all(r.completion_ids == [eos] and r.text == "" and not r.truncated for r in out)
    assert not model.training
    model.logit_bias = -bias
    out = HFGenerator(model, tokenizer).generate(PROMPTS, n=2, params=SamplingParams(max_new_tokens=5))
    assert all(len(r.completion_ids) == 5 and r.truncated for r in out)


def test_pure_temperature_top_p_sampling(tokenizer):
    # A spread of logits: transformers' default top_k=50 would cap the distinct tokens at 50.
    vocab = len(tokenizer)
    bias = torch.linspace(0.0, 1.0, vocab)
    bias[tokenizer.eos_token_id] = -100.0
    model = tiny_llama(tokenizer, bias=bias)
    with torch.no_grad():
        model.model.norm.weight.zero_()  # hidden state 0: logits are exactly the bias
    # A checkpoint's generation_config.json must not sneak processors in either.
    model.generation_config.top_k = 5
    model.generation_config.min_p = 0.5
    model.generation_config.repetition_penalty = 3.0
    out = HFGenerator(model, tokenizer, batch_size=64).generate(
        ["<s>x"], n=64, params=SamplingParams(max_new_tokens=8, seed=1)
    )
    distinct = {t for r in out for t in r.completion_ids}
    assert len(distinct) > 70
    # top_p keeps only the highest-logit tokens whose mass reaches p.
    probs = torch.softmax(bias, dim=0)
    order = probs.argsort(descending=True)
    keep = set(order[: int((probs[order].cumsum(0) < 0.2).sum()) + 1].tolist())
    out = HFGenerator(model, tokenizer, batch_size=64).generate(
        ["<s>x"], n=64, params=SamplingParams(max_new_tokens=8, top_p=0.2, seed=1)
    )
    sampled = {t for r in out for t in r.completion_ids}
    assert sampled <= keep and len(sampled) > 1


def test_seed_reproducible_and_rng_restored(tokenizer):
    model = tiny_llama(tokenizer)
    generator = HFGenerator(model, tokenizer, batch_size=5)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = generator.generate(PROMPTS, n=3, params=SamplingParams(max_new_tokens=6, seed=7))
    assert torch.equal(torch.get_rng_state(), state), "a seeded call must not consume the global RNG"
    b = generator.generate(PROMPTS, n=3, params=SamplingParams(max_new_tokens=6, seed=7))
    c = generator.generate(PROMPTS, n=3, params=SamplingParams(max_new_tokens=6, seed=8))
    assert [r.completion_ids for r in a] == [r.completion_ids for r in b]
    assert [r.completion_ids for r in a] != [r.completion_ids for r in c]


def test_greedy_is_independent_of_batching(tokenizer):
    model = tiny_llama(tokenizer, seed=3)
    params = SamplingParams(temperature=0, max_new_tokens=8)
    one = HFGenerator(model, tokenizer, batch_size=1).generate(PROMPTS, n=2, params=params)
    many = HFGenerator(model, tokenizer, batch_size=6).generate(PROMPTS, n=2, params=params)
    assert [r.completion_ids for r in one] == [r.completion_ids for r in many]
    assert one[0].completion_ids == one[1].completion_ids  # greedy: samples of one prompt agree


def test_bad_generate_arguments(tokenizer):
    generator = HFGenerator(tiny_llama(tokenizer), tokenizer)
    with pytest.raises(ValueError, match="n must be"):
        generator.generate(PROMPTS, n=0, params=SamplingParams())
    with pytest.raises(TypeError, match="list of strings"):
        generator.generate("<s>Q", n=1, params=SamplingParams())
    with pytest.raises(ValueError, match="batch_size"):
        HFGenerator(generator.model, tokenizer, batch_size=0)


def _reference_logps(model, prompt: list[int], completion: list[int], temperature: float) -> torch.Tensor:
    ids = torch.tensor([prompt + completion])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].double() / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def test_completion_logprobs_match_unpadded_forward(tokenizer):
    model = tiny_llama(tokenizer, seed=5).eval()
    rows = [([2, 10, 11, 12], [20, 21, 2]), ([2, 30], [40, 41, 42, 43, 44]), ([2, 50, 51], [])]
    with torch.no_grad():
        for temperature in (1.0, 0.6):
            logps, mask = completion_logprobs(model, rows, pad_token_id=0, temperature=temperature)
            assert logps.shape == mask.shape == (3, 5) and logps.dtype == torch.float32
            assert mask.sum(1).tolist() == [3, 5, 0]
            for i, (prompt, completion) in enumerate(rows):
                if completion:
                    ref = _reference_logps(model, prompt, completion, temperature)
                    torch.testing.assert_close(
                        logps[i, : len(completion)].double(), ref, atol=1e-5, rtol=1e-5
                    )
                assert torch.all(logps[i, len(completion) :] == 0)


def test_completion_logprobs_of_rollouts_carry_grad(tokenizer):
    model = tiny_llama(tokenizer, seed=6)
    rollouts = HFGenerator(model, tokenizer).generate(
        PROMPTS, n=2, params=SamplingParams(max_new_tokens=4, seed=0)
    )
    assert all(isinstance(r, Rollout) for r in rollouts)
    logps, mask = completion_logprobs(model, rollouts, pad_token_id=tokenizer.pad_token_id)
    (logps * mask).sum().backward()
    assert model.lm_head.weight.grad is not None and model.lm_head.weight.grad.abs().sum() > 0
    batch = build_completion_batch(rollouts, pad_token_id=tokenizer.pad_token_id)
    assert batch.completion_mask.sum().item() == sum(len(r.completion_ids) for r in rollouts)


def test_completion_logprobs_rejects_bad_rows(tokenizer):
    model = tiny_llama(tokenizer)
    with pytest.raises(ValueError, match="row 1: empty prompt_ids"):
        completion_logprobs(model, [([2], [3]), ([], [3])])
    with pytest.raises(TypeError, match="row 0"):
        completion_logprobs(model, ["text"])
    with pytest.raises(ValueError, match="temperature"):
        completion_logprobs(model, [([2], [3])], temperature=0)
