"""evaluate_problems with a scripted generator: metrics, the sample cache, resume after an interruption."""

from __future__ import annotations

import dataclasses
import json

import pytest

from conspo.data import Problem
from conspo.eval.cache import SampleCache
from conspo.eval.runner import evaluate_problems
from conspo.rewards import check_equivalence, extract_answer
from conspo.rollout import Rollout, SamplingParams


class InProcessVerifier:
    """The verifier's interface without the worker pool (answers here are simple numbers)."""

    def verify_batch(self, completions, answers):
        return [check_equivalence(a, extract_answer(c)) for c, a in zip(completions, answers)]

    def equivalent_pairs(self, pairs):
        return [check_equivalence(a, b).correct for a, b in pairs]


class ScriptedGenerator:
    """Sample j of a prompt is SCRIPT[prompt][j mod len]; counts rows generated; can fail on a given call."""

    batch_size = 4

    def __init__(self, script: dict[str, list[str]], fail_on_call: int | None = None) -> None:
        self.script = script
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.rows = 0
        self.seen: dict[str, int] = {}

    def generate(self, prompts, n, params):
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise KeyboardInterrupt("simulated interruption")
        out = []
        for i, prompt in enumerate(prompts):
            for _ in range(n):
                j = self.seen.get(prompt, 0)
                self.seen[prompt] = j + 1
                text = self.script[prompt][j % len(self.script[prompt])]
                out.append(Rollout(i, [1], [5] * (len(text) % 7 + 1), text, truncated=text.endswith("...")))
        self.rows += len(out)
        return out


PROBLEMS = [Problem("p1", "one", "1/2"), Problem("p2", "two", "3"), Problem("p3", "three", "10")]
SCRIPT = {
    # p1: 2 of 4 correct, written differently; the majority (2 votes for 1/2) is correct.
    "one": ["\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "\\boxed{7}", "I think it is ..."],
    # p2: 1 of 4 correct; majority wrong (4 appears twice).
    "two": ["\\boxed{4}", "\\boxed{3}", "\\boxed{4}", "no idea"],
    "three": ["\\boxed{10}"],
}
PARAMS = SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=16, seed=0)


def run(generator, cache=None, **kwargs):
    options = {
        "n": 4,
        "params": PARAMS,
        "ks": (1, 2),
        "maj_ks": (4,),
        "template": "testbed",
        "benchmark": "toy",
    }
    return evaluate_problems(generator, PROBLEMS, InProcessVerifier(), cache=cache, **{**options, **kwargs})


def test_metrics_per_problem_and_benchmark():
    result = run(ScriptedGenerator(SCRIPT))
    by_id = {p.problem_id: p for p in result.problems}
    assert [s.correct for s in by_id["p1"].samples] == [True, True, False, False]
    assert by_id["p1"].metrics == {"avg@4": 0.5, "pass@1": 0.5, "pass@2": pytest.approx(5 / 6), "maj@4": 1.0}
    assert by_id["p2"].metrics == {"avg@4": 0.25, "pass@1": 0.25, "pass@2": 0.5, "maj@4": 0.0}
    assert by_id["p3"].metrics["avg@4"] == 1.0 and by_id["p3"].metrics["maj@4"] == 1.0
    assert result.metrics["avg@4"] == pytest.approx((0.5 + 0.25 + 1.0) / 3)
    assert result.metrics["pass@2"] == pytest.approx((5 / 6 + 0.5 + 1.0) / 3)
    assert result.metrics["maj@4"] == pytest.approx(2 / 3)
    assert result.score == result.metrics["avg@4"]
    assert result.extra["truncated"] == pytest.approx(1 / 12)
    assert result.num_generated == 12 and result.num_cached == 0
    assert by_id["p2"].samples[3].extracted is None and by_id["p2"].samples[3].reason == "no_answer"


def test_greedy_sample_is_reported_separately():
    result = run(ScriptedGenerator(SCRIPT), greedy=True)
    assert result.metrics["greedy"] == pytest.approx(2 / 3)  # greedy = 5th scripted answer: 0.5, 4, 10
    assert all(p.greedy is not None and p.greedy.sample_index == -1 for p in result.problems)
    assert result.num_generated == 15


def test_bad_arguments_fail_before_generation():
    generator = ScriptedGenerator(SCRIPT)
    with pytest.raises(ValueError, match=r"k=8 must be an int in \[1, n=4\]"):
        run(generator, ks=(8,))
    with pytest.raises(ValueError, match="duplicate problem id 'p1'"):
        evaluate_problems(generator, PROBLEMS + PROBLEMS[:1], InProcessVerifier(), n=1, params=PARAMS)
    assert generator.calls == 0


def test_resume_after_interruption_generates_only_what_is_missing(tmp_path):
    path = tmp_path / "cache" / "model.jsonl"
    # rows_per_call=4 with n=4: one problem per call; the 3rd call is interrupted.
    first = ScriptedGenerator(SCRIPT, fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        run(first, cache=SampleCache(path, "fp"), rows_per_call=4)
    assert first.rows == 8
    lines = path.read_text().splitlines()
    assert len(lines) == 8 and {json.loads(x)["problem_id"] for x in lines} == {"p1", "p2"}

    second = ScriptedGenerator(SCRIPT)
    resumed = run(second, cache=SampleCache(path, "fp"), rows_per_call=4)
    assert second.rows == 4 and second.seen == {"three": 4}
    assert resumed.num_generated == 4 and resumed.num_cached == 8
    assert resumed.metrics == run(ScriptedGenerator(SCRIPT)).metrics

    third = ScriptedGenerator(SCRIPT)
    again = run(third, cache=SampleCache(path, "fp"))
    assert third.rows == 0 and again.num_cached == 12
    # A different model fingerprint never reuses those samples.
    other = ScriptedGenerator(SCRIPT)
    run(other, cache=SampleCache(path, "another-model"))
    assert other.rows == 12


@pytest.mark.parametrize(
    "change", [{"temperature": 0.7}, {"top_p": 0.9}, {"max_new_tokens": 17}, {"seed": 1}], ids=str
)
def test_other_sampling_settings_never_reuse_cached_samples(tmp_path, change):
    path = tmp_path / "model.jsonl"
    run(ScriptedGenerator(SCRIPT), cache=SampleCache(path, "fp"))
    same = ScriptedGenerator(SCRIPT)
    run(same, cache=SampleCache(path, "fp"), params=dataclasses.replace(PARAMS))
    assert same.rows == 0  # equal settings: all 12 from the cache
    other = ScriptedGenerator(SCRIPT)
    result = run(other, cache=SampleCache(path, "fp"), params=dataclasses.replace(PARAMS, **change))
    assert other.rows == 12 and result.num_cached == 0


def test_partially_missing_problem_and_torn_last_line(tmp_path):
    path = tmp_path / "model.jsonl"
    run(ScriptedGenerator(SCRIPT), cache=SampleCache(path, "fp"))
    lines = path.read_text().splitlines()
    # Drop two samples of p1 and tear the last line in half (a kill during a write).
    kept = [
        x for x in lines if not (json.loads(x)["problem_id"] == "p1" and json.loads(x)["sample_index"] >= 2)
    ]
    path.write_text("\n".join(kept[:-1]) + "\n" + kept[-1][:20])
    cache = SampleCache(path, "fp")
    assert cache.skipped_lines == 1
    generator = ScriptedGenerator(SCRIPT)
    result = run(generator, cache=cache)
    assert generator.rows == 3  # p1's samples 2 and 3, plus the torn p3 sample
    assert sorted(s.sample_index for s in result.problems[0].samples) == [0, 1, 2, 3]
    assert len(SampleCache(path, "fp")) == 12  # the torn line does not break later loads


def test_model_fingerprint_follows_the_weights(tmp_path):
    from conspo.eval.cache import model_fingerprint

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 8)
    before = model_fingerprint(tmp_path)
    assert model_fingerprint(tmp_path) == before and len(before) == 16
    (tmp_path / "model.safetensors").write_bytes(b"\0" * 9)  # a checkpoint rewritten in place
    assert model_fingerprint(tmp_path) != before
    assert model_fingerprint("org/model") != model_fingerprint("org/model", revision="v2")


# -- per-sample seeds: a mix of cached and fresh samples equals a fresh run ------------------------------


@pytest.fixture(scope="module")
def tiny_generator_parts(tmp_path_factory):
    """A random tiny Llama with the testbed tokenizer (fast) and 12 testbed problems."""
    from conspo.testbed import TinyModelConfig, build_char_tokenizer, build_tiny_model, make_task

    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    tokenizer = build_char_tokenizer()
    config = TinyModelConfig(
        hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=96
    )
    return build_tiny_model(tokenizer, config, seed=0), tokenizer, make_task("add", seed=0).eval_problems(12)


def _samples(result):
    return {(p.problem_id, s.sample_index): s.completion for p in result.problems for s in p.samples}


@pytest.mark.parametrize("backend", ["hf", "kv_cache"])
def test_cached_and_fresh_samples_mix_into_exactly_a_fresh_run(tmp_path, tiny_generator_parts, backend):
    from conspo.rollout import make_generator

    model, tokenizer, problems = tiny_generator_parts
    params = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=12, seed=3)

    def evaluate(problems, n, cache, batch_size):
        generator = make_generator(model, tokenizer, backend=backend, batch_size=batch_size)
        return evaluate_problems(
            generator,
            problems,
            InProcessVerifier(),
            n=n,
            params=params,
            template="testbed",
            tokenizer=tokenizer,
            cache=cache,
            benchmark="add",
        )

    fresh = evaluate(problems, 6, None, batch_size=16)
    # --limit 3 --n 2, then --limit 7 --n 4, then all 12 problems with --n 6, into one cache, other batch sizes.
    path = tmp_path / "model.jsonl"
    evaluate(problems[:3], 2, SampleCache(path, "fp"), batch_size=5)
    evaluate(problems[:7], 4, SampleCache(path, "fp"), batch_size=3)
    mixed = evaluate(problems, 6, SampleCache(path, "fp"), batch_size=7)
    assert mixed.num_cached == 28 and mixed.num_generated == 72 - 28
    assert _samples(mixed) == _samples(fresh)
    assert mixed.metrics == fresh.metrics
    # The samples are random draws, not one completion repeated.
    assert len(set(_samples(fresh).values())) > 24
