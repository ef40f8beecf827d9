"""`conspo train` checks its inputs before any model loads: the data (read and validated, also by --dry-run),
the model's context length against prompt + completion, and micro-batch sizes as docs/trainer.md states."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conspo.cli import main
from conspo.config import ConfigError, load_config
from conspo.trainer import setup as trainer_setup
from conspo.trainer.config import TrainConfig
from conspo.trainer.loop import Trainer
from conspo.trainer.plan import build_plan, check_context

GOOD = {"problem": "1+1", "answer": "2"}


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.fixture
def bad_inputs(tmp_path) -> dict[str, Path]:
    (tmp_path / "folder").mkdir()
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(bytes(range(256)) * 8)
    return {
        "folder": tmp_path / "folder",
        "binary": binary,
        "bad rows": _jsonl(tmp_path / "rows.jsonl", [GOOD, {"problem": "", "answer": "3"}, "not json", GOOD]),
        "no suffix": _jsonl(tmp_path / "rows", [GOOD]),
    }


@pytest.fixture
def no_model(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was checked")

    monkeypatch.setattr("conspo.trainer.loop.load_policy", refuse)


@pytest.mark.parametrize("case", ["folder", "binary", "bad rows", "no suffix"])
def test_dry_run_reads_and_refuses_bad_training_data(case, bad_inputs, tmp_path, capsys):
    argv = ["train", "--dry-run", f"data.train={bad_inputs[case]}", f"output_dir={tmp_path / 'runs'}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("conspo train: data.train: ") and err.count("\n") == 1, err  # one line
    assert "--skip-bad-rows" not in err
    if case == "bad rows":
        assert "2 invalid row(s)" in err and "rows.jsonl:2" in err and "data.on_error=skip" in err


@pytest.mark.parametrize("case", ["folder", "bad rows"])
def test_a_real_run_refuses_bad_data_before_the_model_loads(case, bad_inputs, tmp_path, capsys, no_model):
    runs = tmp_path / "runs"
    assert main(["train", f"data.train={bad_inputs[case]}", f"output_dir={runs}", "run_name=r"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("conspo train: data.train: ") and err.count("\n") == 1, err
    assert not (runs / "r").exists()  # nothing written either


def test_bad_held_out_data_is_named_as_data_eval(bad_inputs, tmp_path, capsys):
    assert main(["train", "--dry-run", f"data.eval={bad_inputs['bad rows']}"]) == 2
    assert capsys.readouterr().err.startswith("conspo train: data.eval: 2 invalid row(s)")


def test_on_error_skip_trains_without_the_bad_rows_and_says_how_many(bad_inputs, tmp_path, capsys, caplog):
    path = bad_inputs["bad rows"]
    assert main(["train", "--dry-run", f"data.train={path}", "data.on_error=skip"]) == 0
    out = capsys.readouterr().out
    assert "train: 2 problems" in out and "skipped 2 invalid row(s) of 4" in out
    cfg = load_config(TrainConfig, None, [f"data.train={path}", "data.on_error=skip"])
    with caplog.at_level("WARNING"):
        train, _ = trainer_setup.load_run_problems(cfg)
    assert len(train) == 2 and "data.train: skipped 2 invalid row(s) of 4" in caplog.text
    with pytest.raises(ConfigError, match="data.on_error"):
        load_config(TrainConfig, None, ["data.on_error=ignore"])


def test_max_train_problems_stops_the_read(tmp_path):
    # Rows past the first N are never read: a bad tail does not matter with max_train_problems=2.
    path = _jsonl(tmp_path / "t.jsonl", [GOOD, {"problem": "2+2", "answer": "4"}, "garbage"])
    cfg = load_config(TrainConfig, None, [f"data.train={path}", "data.max_train_problems=2"])
    assert [p.answer for p in trainer_setup.load_run_problems(cfg)[0]] == ["2", "4"]


def test_dry_run_downloads_nothing_and_says_so(capsys, monkeypatch):
    monkeypatch.delenv("CONSPO_DATA_DIR", raising=False)
    assert main(["train", "--dry-run", "data.train=deepscaler", "data.eval=none"]) == 0
    out = capsys.readouterr().out
    assert "train: not read" in out and "agentica-org/DeepScaleR-Preview-Dataset" in out


def test_dry_run_reports_the_context_length(capsys):
    assert main(["train", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "context length       128 tokens: longest prompt" in out and "fits" in out


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["rollout.max_new_tokens=200"], "rollout.max_new_tokens"),
        (["eval.max_new_tokens=125"], "eval.max_new_tokens"),
    ],
)
def test_completions_longer_than_the_context_are_refused_naming_the_field(overrides, field, capsys):
    # The testbed policy holds 128 positions; without this check generation ran on for up to 8192 tokens.
    assert main(["train", "--dry-run", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"conspo train: {field}: ") and "context of 128 tokens" in err and "<= " in err


def test_prompts_longer_than_the_context_are_refused(tmp_path, capsys):
    path = _jsonl(
        tmp_path / "long.jsonl",
        [{"id": "short", **GOOD}, {"id": "long", "problem": "x" * 300, "answer": "1"}],
    )
    assert main(["train", "--dry-run", f"data.train={path}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("conspo train: data.train: 1 of 2 prompts do not fit") and "'long'" in err


def test_the_trainer_checks_the_context_before_generating(random_policy, tmp_path, monkeypatch):
    # The same check in the Trainer, on the loaded model's own config (here a random 128-position policy).
    def no_generation(*args, **kwargs):
        raise AssertionError("generation started")

    monkeypatch.setattr("conspo.rollout.HFGenerator.generate", no_generation)
    cfg = load_config(
        TrainConfig,
        None,
        [f"model.name_or_path={random_policy}", f"output_dir={tmp_path}", "rollout.max_new_tokens=125"],
    )
    with pytest.raises(ConfigError, match=r"rollout\.max_new_tokens: 125 new tokens"):
        Trainer(cfg)


def test_check_context_without_a_known_length_checks_nothing():
    assert check_context(TrainConfig(), None, None, [], []) is None


def test_micro_batch_at_or_above_the_mini_batch_acts_like_none():
    """docs/trainer.md: a micro-batch size at or above the mini-batch is one micro-batch (1000 was refused)."""
    base = ["batch.prompts_per_step=4", "batch.group_size=4"]  # 16 rows per mini-batch
    whole = build_plan(load_config(TrainConfig, None, base))
    for size in (16, 1000):
        plan = build_plan(load_config(TrainConfig, None, [*base, f"batch.micro_batch_size={size}"]))
        assert (plan.rows_per_micro_batch, plan.micro_batches_per_optimizer_step) == (16, 1)
        assert plan.rows_per_micro_batch == whole.rows_per_micro_batch
    coupled = load_config(
        TrainConfig, None, [*base, "batch.micro_batch_size=1000", "batch.update_mode=coupled"]
    )
    coupled.validate()
    with pytest.raises(ConfigError, match="must divide"):
        load_config(TrainConfig, None, [*base, "batch.micro_batch_size=5"])
