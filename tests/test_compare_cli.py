"""`conspo compare` end to end on the testbed data: parallel runs, table and plots, resume, failed runs."""

from __future__ import annotations

import json

import pytest

from conspo.cli import main
from conspo.compare.runner import RunSpec, execute_runs, read_result, run_dir_for

pytestmark = pytest.mark.slow

SMALL = [
    "batch.prompts_per_step=2",
    "batch.group_size=4",
    "rollout.max_new_tokens=8",
    "eval.max_problems=4",
    "eval.samples=1",
]


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    """A tiny randomly initialised Llama with the testbed tokenizer (the warm start takes minutes)."""
    from conspo.testbed import TinyModelConfig, build_char_tokenizer, build_tiny_model

    folder = tmp_path_factory.mktemp("policy")
    tokenizer = build_char_tokenizer()
    shape = TinyModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_positions=64)
    build_tiny_model(tokenizer, shape, seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def compare(out, policy, *extra: str) -> int:
    sets = [a for s in (*SMALL, f"model.name_or_path={policy}") for a in ("--set", s)]
    argv = ["compare", "--objectives", "grpo,conspo:margin=none", "--seeds", "2", "--steps", "2"]
    return main([*argv, "--out", str(out), "--jobs", "2", "--eval-every", "1", *sets, *extra])


def test_compare_runs_every_cell_writes_the_table_and_resumes(tmp_path, policy, capsys):
    out = tmp_path / "cmp"
    assert compare(out, policy) == 0
    printed = capsys.readouterr().out
    assert "finished grpo seed 0" in printed and "finished conspo:margin=none seed 1" in printed

    results = {
        (o, s): read_result(run_dir_for(out, o, s)) for o in ("grpo", "conspo:margin=none") for s in (0, 1)
    }
    assert all(r is not None and r.status == "ok" and r.summary["steps"] == 2 for r in results.values())
    metrics = (run_dir_for(out, "grpo", 1) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in metrics][:3] == [0, 1, 2]  # eval at 0, then every step

    # Same starting policy, prompts and sampling seed for every objective of a seed: identical first rollouts.
    def first_step(objective, seed):
        rows = [json.loads(line) for line in (run_dir_for(out, objective, seed) / "metrics.jsonl").open()]
        row = next(r for r in rows if r["step"] == 1)
        return row["length/mean"], row["perf/gen_tokens"], row["reward/mean"]

    for seed in (0, 1):
        assert first_step("grpo", seed) == first_step("conspo:margin=none", seed)

    # The paired report: each seed's runs share the held-out problems and draws, so the initial policy's
    # held-out accuracy is the same number for both objectives, and the differences are over both seeds.
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"] == "grpo"
    assert [(p["objective"], p["metric"], p["n"]) for p in report["paired"]] == [
        ("conspo:margin=none", "final", 2),
        ("conspo:margin=none", "auc", 2),
    ]
    rows = json.loads((out / "summary.json").read_text())["objectives"]
    for seed in ("0", "1"):
        assert rows[0]["per_seed"][seed]["initial"] == rows[1]["per_seed"][seed]["initial"]
    assert "## Paired differences to `grpo`" in (out / "report.md").read_text()

    table = (out / "compare.md").read_text()
    assert "| `grpo` | 2 |" in table and "| `conspo:margin=none` | 2 |" in table
    assert (out / "accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "reward.png").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert [o["objective"] for o in summary["objectives"]] == ["grpo", "conspo:margin=none"]
    assert all(o["seeds_ok"] == 2 for o in summary["objectives"])

    # Started again: nothing retrains. With one result removed: only that run does.
    stamp = (run_dir_for(out, "grpo", 0) / "result.json").stat().st_mtime_ns
    (run_dir_for(out, "conspo:margin=none", 1) / "result.json").unlink()
    assert compare(out, policy) == 0
    printed = capsys.readouterr().out
    assert printed.count("done before") == 3 and "finished conspo:margin=none seed 1" in printed
    assert (run_dir_for(out, "grpo", 0) / "result.json").stat().st_mtime_ns == stamp

    # Re-plot only; different settings in the same folder are refused.
    assert main(["compare", "--out", str(out), "--report-only"]) == 0
    assert compare(out, policy, "--set", "batch.group_size=2") == 2


def test_a_failing_run_is_reported_and_the_others_finish(tmp_path, policy):
    from conspo.config import config_to_dict, load_config
    from conspo.trainer.config import TrainConfig

    good = load_config(
        TrainConfig,
        None,
        [
            *SMALL,
            "steps=1",
            f"model.name_or_path={policy}",
            "logging.progress=false",
            "logging.tensorboard=false",
            "checkpoint.save_final=false",
            "checkpoint.save_best=false",
        ],
    )
    bad = config_to_dict(good) | {"data": config_to_dict(good.data) | {"train": "no_such_dataset"}}
    specs = [
        RunSpec("grpo", 0, str(tmp_path / "bad"), bad),
        RunSpec("grpo", 1, str(tmp_path / "good"), config_to_dict(good)),
    ]
    results = execute_runs(specs, jobs=1)
    assert [r.status for r in results] == ["failed", "ok"]
    assert "no_such_dataset" in results[0].error
    assert read_result(tmp_path / "bad").status == "failed"  # saved: a rerun retries it
