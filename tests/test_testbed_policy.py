"""The tiny policy and its warm start: Auto-class reload and generation, determinism, cache, accuracy band."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from conspo.data import render_prompt
from conspo.testbed import (
    DEFAULT_TESTBED,
    TinyModelConfig,
    WarmStartConfig,
    build_char_tokenizer,
    build_tiny_model,
    ensure_testbed_policy,
    make_task,
    measure_accuracy,
    read_testbed_info,
)
from conspo.testbed import warmstart as warmstart_module
from conspo.testbed.config import DEFAULT_STEPS

# A warm start small enough to run twice in a test (seconds): checks plumbing, not accuracy.
TINY = dict(
    model=TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
    steps=4,
    batch_size=8,
    num_train_problems=40,
    eval_problems=4,
    eval_samples=2,
)


def test_default_model_size_and_auto_reload(tmp_path):
    tok = build_char_tokenizer()
    model = build_tiny_model(tok, seed=1)
    assert 0.5e6 <= sum(p.numel() for p in model.parameters()) <= 2e6
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert reloaded.config.model_type == "llama"
    x = torch.tensor([[tok.bos_token_id, 5, 6, 7]])
    torch.testing.assert_close(reloaded(x).logits, model(x).logits)
    tok2 = AutoTokenizer.from_pretrained(tmp_path)
    enc = tok2([render_prompt("1+2", tok2, "testbed")] * 2, return_tensors="pt", add_special_tokens=False)
    out = reloaded.generate(**enc, do_sample=True, max_new_tokens=5, pad_token_id=tok2.pad_token_id)
    assert out.shape[0] == 2 and enc["input_ids"].shape[1] < out.shape[1] <= enc["input_ids"].shape[1] + 5


def test_seeded_initialisation():
    tok = build_char_tokenizer()
    a, b, c = build_tiny_model(tok, seed=0), build_tiny_model(tok, seed=0), build_tiny_model(tok, seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_warm_start_is_deterministic_and_cached(tmp_path, monkeypatch):
    first = ensure_testbed_policy(tmp_path / "a", **TINY)
    second = ensure_testbed_policy(tmp_path / "b", **TINY)
    assert first.name == second.name == WarmStartConfig(**TINY).cache_key
    wa, wb = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    info = read_testbed_info(first)
    assert info["config"]["steps"] == 4 and info["eval"]["n"] == 8
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(f".{first.name}-")]  # no temp left
    # a second call reuses the cache without training
    monkeypatch.setattr(warmstart_module, "warm_start", lambda *a, **k: pytest.fail("retrained"))
    assert ensure_testbed_policy(tmp_path / "a", **TINY) == first
    # another configuration is another cache entry
    assert WarmStartConfig(**{**TINY, "seed": 1}).cache_key != first.name


def test_config_validation():
    with pytest.raises(ValueError, match="slip_rate"):
        WarmStartConfig(slip_rate=1.0)
    with pytest.raises(ValueError, match="unknown testbed task"):
        WarmStartConfig(task="div")
    with pytest.raises(ValueError, match="steps must be >= 1"):
        WarmStartConfig(steps=0)
    assert WarmStartConfig(model={"hidden_size": 64}).model == TinyModelConfig(hidden_size=64)
    # steps default per task, resolved at creation so the cache key holds the number used
    assert WarmStartConfig(task="mul").steps == DEFAULT_STEPS["mul"]
    assert WarmStartConfig(task="add", steps=None) == WarmStartConfig(task="add", steps=DEFAULT_STEPS["add"])
    with pytest.raises(ValueError, match="not a testbed policy"):
        read_testbed_info("/nonexistent")


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CONSPO_CACHE", str(tmp_path))
    assert warmstart_module.default_cache_dir() == tmp_path / "testbed"


@pytest.mark.slow
def test_default_policy_reloads_generates_and_lands_in_band(testbed_policy_dir):
    """The base policy mixes right and wrong answers: 30-60% at temperature 1 on held-out problems."""
    info = json.loads((testbed_policy_dir / "testbed.json").read_text())
    assert info["config"] == DEFAULT_TESTBED.to_dict()
    model = AutoModelForCausalLM.from_pretrained(testbed_policy_dir)
    tok = AutoTokenizer.from_pretrained(testbed_policy_dir)
    task = make_task(DEFAULT_TESTBED.task, seed=7, difficulty=DEFAULT_TESTBED.difficulty)
    # a fresh measurement (other problems, other sampling seed) through the Auto classes and the real verifier
    result = measure_accuracy(model, tok, task.eval_problems(96), samples=4, seed=7)
    assert result["verifier"] == "conspo.rewards.MathVerifier"
    assert 0.30 <= result["accuracy"] <= 0.60, result
    assert result["mixed_groups"] >= 0.4, result  # most groups hold both a right and a wrong answer
    for ex in result["examples"]:
        assert ex["prompt"].startswith("<s>") and "\\boxed{" in ex["completion"]


def test_judge_uses_the_real_verifier_and_falls_back_to_integers(monkeypatch):
    completions, answers = ["11,9 \\boxed{91}", "11,8 \\boxed{81}", "no answer"], ["91", "91", "91"]
    correct, judge = warmstart_module._judge(completions, answers)
    assert (correct, judge) == ([True, False, False], "conspo.rewards.MathVerifier")
    monkeypatch.setitem(__import__("sys").modules, "conspo.rewards", None)  # import now raises ImportError
    assert warmstart_module._judge(completions, answers) == ([True, False, False], "integer-fallback")
