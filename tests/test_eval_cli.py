"""`conspo eval` end to end on the testbed's tiny Llama policy and a local benchmark file, plus validation."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from conspo.cli import main
from conspo.eval.cli import add_arguments, plan_from_args
from conspo.eval.models import expand_models
from conspo.rollout import HFGenerator
from conspo.testbed import TinyModelConfig, build_char_tokenizer, build_tiny_model, make_task


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory) -> Path:
    """The testbed policy's architecture and tokenizer, saved like a checkpoint (random weights: fast).

    1024 positions: real benchmark prompts (AIME, MATH-500) must fit its context, or plan_from_args refuses."""
    path = tmp_path_factory.mktemp("policy")
    tokenizer = build_char_tokenizer()
    config = TinyModelConfig(
        hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=1024
    )
    build_tiny_model(tokenizer, config, seed=0).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "add.jsonl"
    problems = make_task("add", seed=0).eval_problems(3)
    path.write_text(
        "".join(json.dumps({"id": p.id, "problem": p.problem, "answer": p.answer}) + "\n" for p in problems)
    )
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def no_generation(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("generation started before validation finished")

    monkeypatch.setattr(HFGenerator, "generate", refuse)


@pytest.mark.slow
def test_eval_on_tiny_policy_then_resume_from_cache(policy_dir, bench_file, tmp_path, monkeypatch):
    out = tmp_path / "out"
    argv = ["eval", "--model", str(policy_dir), "--benchmarks", str(bench_file), "--template", "testbed"]
    argv += ["--n", "2", "--pass-k", "1,2", "--maj-k", "2", "--greedy", "--max-new-tokens", "6"]
    argv += ["--batch-size", "4", "--output-dir", str(out), "--verifier-workers", "1", "--quiet"]
    assert main(argv) == 0
    summary = json.loads((out / "report.json").read_text())
    bench = summary["models"][0]["benchmarks"]["add"]
    assert bench["problems"] == 3 and bench["n"] == 2
    assert bench["generated"] == 3 * 3 and bench["cached"] == 0  # 2 samples + 1 greedy per problem
    assert set(bench["metrics"]) == {"avg@2", "pass@1", "pass@2", "maj@2", "greedy"}
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 9 and {s["sample_index"] for s in samples} == {-1, 0, 1}
    sampled = [s for s in samples if s["sample_index"] >= 0]
    assert bench["metrics"]["avg@2"] == pytest.approx(sum(s["correct"] for s in sampled) / 6)
    assert all(s["num_tokens"] <= 6 for s in samples)
    assert all(s["num_tokens"] == 6 for s in samples if s["truncated"])
    assert "| add (avg@2)" in (out / "report.md").read_text()

    # The rerun generates nothing: every sample comes from the cache and the numbers are the same.
    def refuse(*args, **kwargs):
        raise AssertionError("a cached sample was generated again")

    monkeypatch.setattr(HFGenerator, "generate", refuse)
    assert main(argv) == 0
    again = json.loads((out / "report.json").read_text())["models"][0]["benchmarks"]["add"]
    assert again["generated"] == 0 and again["cached"] == 9
    assert again["metrics"] == bench["metrics"]


def test_names_resolve_through_the_data_registry(policy_dir, shared_data_dir):
    plan = plan_from_args(
        parse(
            [
                "--model",
                str(policy_dir),
                "--benchmarks",
                "aime24,math500",
                "--data-dir",
                str(shared_data_dir),
                "--limit",
                "3",
            ]
        )
    )
    assert {name: len(p) for name, p in plan.benchmarks.items()} == {"aime24": 3, "math500": 3}
    assert (plan.specs["aime24"].n, plan.specs["aime24"].metric_label) == (32, "avg@32")  # the paper preset
    assert (plan.specs["math500"].n, plan.specs["math500"].metric_label) == (4, "pass@1")
    assert (plan.params.temperature, plan.params.top_p) == (0.6, 0.95)
    override = plan_from_args(
        parse(
            [
                "--model",
                str(policy_dir),
                "--benchmarks",
                "aime24",
                "--data-dir",
                str(shared_data_dir),
                "--n",
                "8",
                "--temperature",
                "1.0",
                "--limit",
                "1",
            ]
        )
    )
    assert override.specs["aime24"].n == 8 and override.specs["aime24"].metric_label == "avg@8"
    assert override.params.temperature == 1.0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--benchmarks", "aime2099"], "aime2099"),
        (["--benchmarks", "{bench}", "--n", "4", "--pass-k", "8"], "k=8 is larger than n=4"),
        (["--benchmarks", "{bench}", "--n", "2", "--maj-k", "3"], "k=3 is larger than n=2"),
        (["--benchmarks", "{bench}", "--model", "{missing}"], "no such folder"),
        (["--benchmarks", "{bench}", "--model", "{empty}"], "no config.json"),
        (["--benchmarks", "{bench}", "--temperature", "-1"], "temperature"),
        (["--benchmarks", "{bench}", "--preset", "quick", "--limit", "0"], "--limit"),
    ],
)
def test_bad_input_fails_before_generation(
    extra, message, policy_dir, bench_file, tmp_path, shared_data_dir, capsys, no_generation
):
    (tmp_path / "empty").mkdir()
    values = {"bench": str(bench_file), "missing": str(tmp_path / "nope"), "empty": str(tmp_path / "empty")}
    extra = [x.format(**values) for x in extra]
    argv = [
        "eval",
        "--model",
        str(policy_dir),
        "--data-dir",
        str(shared_data_dir),
        "--output-dir",
        str(tmp_path),
    ]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("conspo eval:") and message in err


def test_missing_data_file_says_where_it_looked(policy_dir, tmp_path, capsys, no_generation):
    argv = ["eval", "--model", str(policy_dir), "--benchmarks", "aime24", "--data-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "--data-dir" in err


def test_run_directory_expands_to_checkpoints_in_step_order(tmp_path):
    run = tmp_path / "run"
    for name in ("checkpoint-000010", "checkpoint-000002", "final", "logs"):
        (run / name).mkdir(parents=True)
        if name != "logs":
            (run / name / "config.json").write_text("{}")
    (run / "tokenizer.json").write_text("{}")
    specs = expand_models([str(run)])
    assert [s.label for s in specs] == ["run/checkpoint-000002", "run/checkpoint-000010", "run/final"]
    assert all(s.tokenizer == str(run) for s in specs)
    with pytest.raises(ValueError, match="twice"):
        expand_models([str(run / "final"), str(run / "final")])


def test_default_template_follows_what_the_model_was_trained_with(tmp_path):
    from conspo.eval.models import default_template

    policy = tmp_path / "policy"
    policy.mkdir()
    assert default_template(str(policy)) == "default"
    (policy / "testbed.json").write_text("{}")
    assert default_template(str(policy)) == "testbed"

    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.yaml").write_text("data:\n  train: testbed\n  template: null\n")
    assert default_template(str(run / "final")) == "testbed"
    (run / "config.yaml").write_text("data:\n  train: math500\n  template: think\n")
    assert default_template(str(run / "final")) == "think"
    (run / "config.yaml").write_text("data:\n  train: math500\n")
    assert default_template(str(run / "final")) == "default"
    assert default_template("some-org/some-hub-model") == "default"
