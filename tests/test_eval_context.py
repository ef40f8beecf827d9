"""`conspo eval` checks, before any model loads or generates: the model's context length against prompt +
--max-new-tokens (cap with a warning, or refuse), the verifier timeout, and a --model path that does not exist."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from conspo.cli import main
from conspo.eval.cli import add_arguments, plan_from_args
from conspo.rollout import HFGenerator
from conspo.testbed import make_task


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "add.jsonl"
    problems = make_task("add", seed=0).eval_problems(3)
    path.write_text(
        "".join(json.dumps({"id": p.id, "problem": p.problem, "answer": p.answer}) + "\n" for p in problems)
    )
    return path


@pytest.fixture
def no_generation(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("generation started before validation finished")

    monkeypatch.setattr(HFGenerator, "generate", refuse)


def test_the_issue_reproduction_is_refused_at_once(
    random_policy, shared_data_dir, tmp_path, capsys, no_generation
):
    """A 128-position model on MATH-500 (8192 new tokens by default) ran for minutes; now it stops before."""
    argv = ["eval", "--model", str(random_policy), "--benchmarks", "math500", "--n", "2", "--limit", "4"]
    assert main([*argv, "--data-dir", str(shared_data_dir), "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("conspo eval: benchmark 'math500': ") and "do not fit in the context" in err
    assert "128 tokens" in err and err.count("\n") == 1


def test_max_new_tokens_is_capped_to_the_context_with_a_warning(random_policy, bench_file):
    plan = plan_from_args(parse(["--model", str(random_policy), "--benchmarks", str(bench_file), "--n", "2"]))
    (label,) = [m.label for m in plan.models]
    assert plan.params.max_new_tokens == 8192  # the preset's, as asked
    cap = plan.capped[(label, "add")]
    assert 0 < cap < 128 and plan.params_for(label, "add").max_new_tokens == cap
    (warning,) = plan.warnings
    assert (
        "--max-new-tokens 8192" in warning
        and "context of 128 tokens" in warning
        and f"at {cap} new" in warning
    )
    assert plan.config()["max_new_tokens_capped"] == {label: {"add": cap}}
    fits = plan_from_args(
        parse(["--model", str(random_policy), "--benchmarks", str(bench_file), "--max-new-tokens", "16"])
    )
    assert fits.capped == {} and fits.warnings == [] and "max_new_tokens_capped" not in fits.config()


@pytest.mark.slow
def test_capped_run_generates_within_the_context(random_policy, bench_file, tmp_path):
    out = tmp_path / "out"
    argv = ["eval", "--model", str(random_policy), "--benchmarks", str(bench_file), "--n", "1", "--quiet"]
    assert main([*argv, "--output-dir", str(out), "--verifier-workers", "1", "--batch-size", "3"]) == 0
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    config = json.loads((out / "report.json").read_text())["config"]
    cap = next(iter(config["max_new_tokens_capped"].values()))["add"]
    assert samples and all(s["num_tokens"] <= cap for s in samples)


def test_unknown_context_length_is_reported(random_policy, bench_file, monkeypatch):
    monkeypatch.setattr("conspo.eval.models._CONTEXT_KEYS", ())
    plan = plan_from_args(parse(["--model", str(random_policy), "--benchmarks", str(bench_file)]))
    assert plan.capped == {} and "context length unknown" in plan.warnings[0]


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf"])
def test_verifier_timeout_is_refused_before_any_model_is_touched(timeout, bench_file, monkeypatch, capsys):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was checked before the verifier timeout")

    monkeypatch.setattr("conspo.eval.models.check_model_loads", no_model)
    argv = [
        "eval",
        "--model",
        "someone/model",
        "--benchmarks",
        str(bench_file),
        "--verifier-timeout",
        timeout,
    ]
    assert main(argv) == 2
    assert "--verifier-timeout must be a finite number > 0" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--temperature", "--top-p"])
def test_nan_sampling_settings_are_refused(flag, random_policy, bench_file, capsys, no_generation):
    assert main(["eval", "--model", str(random_policy), "--benchmarks", str(bench_file), flag, "nan"]) == 2
    assert f"{flag} must be a finite number" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["/nonexistent", "./runs/x/final", "runs/x/final", "~/nope"])
def test_a_missing_model_path_is_called_a_missing_path_not_a_hub_id(value, bench_file, capsys):
    assert main(["eval", "--model", value, "--benchmarks", str(bench_file)]) == 2
    err = capsys.readouterr().err
    assert "no such folder" in err and "hub" not in err


def test_a_hub_id_is_still_called_a_hub_id(bench_file, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["eval", "--model", "someone/no-such-model", "--benchmarks", str(bench_file)]) == 2
    assert "hub id" in capsys.readouterr().err


def test_context_length_reads_the_usual_config_fields():
    from types import SimpleNamespace

    from conspo.eval.models import context_length

    assert context_length(SimpleNamespace(max_position_embeddings=4096)) == 4096
    assert context_length(SimpleNamespace(n_positions=1024)) == 1024  # GPT-2 style
    assert context_length(SimpleNamespace(max_position_embeddings=int(1e30))) is None  # "no limit" sentinel
    assert context_length(SimpleNamespace()) is None
    assert context_length(SimpleNamespace(seq_length=2048)) == 2048
