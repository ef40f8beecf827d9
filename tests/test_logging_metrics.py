"""MetricsLogger writes resumable JSON Lines, TensorBoard scalars and W&B rows; TrainProgress reports."""

from __future__ import annotations

import io
import json
import math
import sys
import types

import pytest
import torch

from conspo.trainer.logging import MetricsLogger, TrainProgress, read_metrics


def test_jsonl_rows_are_flushed_and_typed(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as logger:
        logger.log(1, {"reward/mean": torch.tensor(0.25), "loss": 1.5, "n": 3, "ok": True, "bad": math.nan})
        # Readable before close: every row is flushed.
        rows = read_metrics(tmp_path / "metrics.jsonl")
        assert len(rows) == 1
        logger.log(2, {"reward/mean": 0.5, "note": "eval"})
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[0]["reward/mean"] == 0.25 and rows[0]["n"] == 3 and rows[0]["ok"] == 1
    assert rows[0]["bad"] is None  # NaN written as null: the file stays strict JSON
    json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0], parse_constant=pytest.fail)
    assert rows[1]["note"] == "eval"
    with pytest.raises(TypeError, match="list"), MetricsLogger(tmp_path, tensorboard=False) as logger:
        logger.log(3, {"x": [1, 2]})
    with pytest.raises(ValueError, match="reserved"), MetricsLogger(tmp_path, tensorboard=False) as logger:
        logger.log(3, {"step": 1})


def test_resume_drops_rows_after_the_checkpoint_and_a_cut_short_line(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False) as logger:
        for step in range(1, 6):
            logger.log(step, {"reward/mean": step / 10})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "rew')  # the killed run died mid-row
    with pytest.warns(UserWarning, match="cut-short last line"):
        assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]

    with MetricsLogger(tmp_path, tensorboard=False, resume_step=3) as logger:
        logger.log(4, {"reward/mean": 0.9})
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[-1]["reward/mean"] == 0.9

    # Without resume_step the file is appended to as it is.
    with MetricsLogger(tmp_path, tensorboard=False) as logger:
        logger.log(5, {"reward/mean": 1.0})
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]


def test_malformed_middle_line_is_named(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        read_metrics(tmp_path / "metrics.jsonl")
    with pytest.raises(FileNotFoundError):
        read_metrics(tmp_path / "missing.jsonl")


def test_tensorboard_scalars_written(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with MetricsLogger(tmp_path, jsonl=False, config={"objective": "conspo"}) as logger:
        for step in (1, 2, 3):
            logger.log(step, {"reward/mean": step * 0.1, "note": "text is not a scalar"})
    assert not (tmp_path / "metrics.jsonl").exists()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert events.Tags()["scalars"] == ["reward/mean"]
    scalars = events.Scalars("reward/mean")
    assert [s.step for s in scalars] == [1, 2, 3]
    assert [round(s.value, 5) for s in scalars] == [0.1, 0.2, 0.3]


def test_disabled_logger_writes_nothing(tmp_path):
    run = tmp_path / "run"
    with MetricsLogger(run, enabled=False, wandb=True) as logger:  # wandb not even imported when disabled
        logger.log(1, {"reward/mean": 1.0})
    assert not run.exists()


def test_wandb_missing_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(ImportError, match=r"conspo\[wandb\]"):
        MetricsLogger(tmp_path, tensorboard=False, wandb=True)


def test_wandb_receives_config_and_numeric_rows(tmp_path, monkeypatch):
    calls: dict = {"log": []}

    class Run:
        def log(self, data, step):
            calls["log"].append((step, data))

        def finish(self):
            calls["finished"] = True

    def init(**kwargs):
        calls["init"] = kwargs
        return Run()

    monkeypatch.setitem(sys.modules, "wandb", types.SimpleNamespace(init=init))
    with MetricsLogger(tmp_path, tensorboard=False, wandb={"project": "p"}, config={"lr": 1e-6}) as logger:
        logger.log(7, {"reward/mean": 0.5, "note": "x"})
    assert calls["init"] == {"project": "p", "config": {"lr": 1e-6}}
    assert calls["log"] == [(7, {"reward/mean": 0.5})]
    assert calls["finished"]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_prints_plain_lines_when_not_a_terminal():
    out = io.StringIO()
    with TrainProgress(4, file=out, print_every=3600) as progress:
        for step in range(1, 5):
            progress.update(step, {"reward/mean": 0.25 * step, "reward/accuracy": 0.5})
    lines = out.getvalue().splitlines()
    # First step and last step only (print_every is an hour).
    assert len(lines) == 2
    assert lines[0].startswith("step 1/4 | reward 0.25 | acc 0.5 | ")
    assert lines[1].startswith("step 4/4 | reward 1 | acc 0.5 | ")
    assert "s/step" in lines[1] and "ETA 0:00:00" in lines[1]


def test_progress_resumed_eta_and_bar():
    progress = TrainProgress(10, start_step=4, file=io.StringIO())
    with progress:
        progress._times.clear()
        progress._times.extend([(4, 0.0), (6, 4.0)])  # 2 s/step measured on new steps only
        assert progress.seconds_per_step() == 2.0
        assert progress.describe(6, {"reward": 0.1}).endswith("reward 0.1 | 2.00 s/step | ETA 0:00:08")

    out = FakeTerminal()
    with TrainProgress(3, file=out) as progress:
        progress.update(1, {"reward/mean": 0.125})
    assert "train" in out.getvalue() and "reward 0.125" in out.getvalue()

    silent = io.StringIO()
    with TrainProgress(3, enabled=False, file=silent) as progress:
        progress.update(1, {"reward/mean": 1.0})
    assert silent.getvalue() == ""
