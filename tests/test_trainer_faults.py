"""Faults lose nothing and mix nothing: one writer per run folder, no silent reuse of a run folder, Ctrl-C and
SIGTERM keep the run, --resume on a finished run changes nothing, --resume with nothing to resume says so."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import conspo.trainer.loop
from conspo.cli import main
from conspo.config import ConfigError, load_config
from conspo.trainer.config import TrainConfig
from conspo.trainer.loop import Trainer, train
from conspo.trainer.run_folder import RunFolderError, RunFolderLock
from trainer_support import SMALL, child_env, train_config


def _args(tmp_path: Path, policy: Path, name: str, *extra: str) -> list[str]:
    return [*SMALL, "steps=3", f"output_dir={tmp_path / 'runs'}", f"model.name_or_path={policy}",
            f"run_name={name}", *extra]  # fmt: skip


@pytest.fixture
def no_model(monkeypatch):
    """Loading the model fails the test: the run-folder checks come before it."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(conspo.trainer.loop, "load_policy", refuse)


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# -- one writer per run folder -------------------------------------------------------------------------


def _hold_lock(folder: Path) -> subprocess.Popen:
    """Another process that holds ``folder``'s run lock (until killed)."""
    script = "import sys, time\nfrom conspo.trainer.run_folder import RunFolderLock\n"
    script += "lock = RunFolderLock(sys.argv[1]).acquire()\nprint('locked', flush=True)\ntime.sleep(120)\n"
    holder = subprocess.Popen([sys.executable, "-c", script, str(folder)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_fails_at_once_naming_the_holder(tmp_path, random_policy, parity_math_verifier, capsys,
                                                         monkeypatch):  # fmt: skip
    run_dir = tmp_path / "runs" / "x"
    holder = _hold_lock(run_dir)
    try:
        with monkeypatch.context() as m:
            m.setattr(conspo.trainer.loop, "load_policy", lambda *a, **k: pytest.fail("the model was loaded"))
            assert main(["train", *_args(tmp_path, random_policy, "x")]) == 2
        err = capsys.readouterr().err
        assert f"{run_dir} is in use by another conspo run (pid {holder.pid})" in err
        assert "Traceback" not in err
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock, nothing stale is left behind
        holder.wait()
    assert main(["train", *_args(tmp_path, random_policy, "x")]) == 0
    assert json.loads((run_dir / "run_card.json").read_text())["summary"]["steps"] == 3


def test_a_second_compare_into_one_folder_fails_at_once(tmp_path, capsys, monkeypatch):
    import conspo.compare.runner

    monkeypatch.setattr(conspo.compare.runner, "execute_runs", lambda *a, **k: pytest.fail("runs started"))
    out = tmp_path / "cmp"
    holder = _hold_lock(out)
    try:
        argv = ["compare", "--objectives", "grpo", "--seeds", "1", "--steps", "2", "--out", str(out)]
        assert main([*argv, "--set", "model.name_or_path=unused"]) == 2
    finally:
        holder.kill()
        holder.wait()
    assert f"{out} is in use by another conspo run (pid {holder.pid})" in capsys.readouterr().err
    assert not (out / "compare.json").exists()


def test_the_lock_is_checked_again_when_the_run_starts(tmp_path, random_policy, parity_math_verifier):
    first = Trainer(train_config(tmp_path, policy=random_policy, run_name="x", base=[*SMALL, "steps=2"]))
    second = Trainer(train_config(tmp_path, policy=random_policy, run_name="x", base=[*SMALL, "steps=2"]))
    # Another writer holds the folder by the time run() starts.
    with RunFolderLock(tmp_path / "x"), pytest.raises(RunFolderError, match=r"in use by another conspo run"):
        first.run()
    second.run()  # and once that one has written a run, the first may not mix into it
    with pytest.raises(RunFolderError, match="already holds a run"):
        first.run()
    assert not (tmp_path / "x" / "checkpoint-000002").exists()


# -- a folder that holds a run is not silently reused --------------------------------------------------


def test_a_new_run_refuses_a_folder_with_a_run_and_overwrite_clears_it(tmp_path, random_policy,
                                                                       parity_math_verifier, capsys):  # fmt: skip
    run_dir = tmp_path / "runs" / "x"
    assert (
        main(
            ["train", *_args(tmp_path, random_policy, "x", "checkpoint.every=1", "checkpoint.keep_last=null")]
        )
        == 0
    )
    (run_dir / "notes.txt").write_text("mine")
    before = _files(run_dir)
    assert {"checkpoint-000001/checkpoint.json", "final/model.safetensors", "run_card.json"} <= set(before)
    capsys.readouterr()

    assert main(["train", *_args(tmp_path, random_policy, "x")]) == 2
    err = capsys.readouterr().err
    assert f"{run_dir} already holds a run (" in err and "--resume" in err and "--overwrite" in err
    assert _files(run_dir) == before  # nothing touched

    assert main(["train", *_args(tmp_path, random_policy, "x", "steps=2"), "--overwrite"]) == 0
    after = _files(run_dir)
    assert not [
        name for name in after if name.startswith("checkpoint-")
    ]  # the old run's checkpoints are gone
    assert after["notes.txt"] == b"mine"  # not the run's: kept
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2]  # the new run's metrics only
    assert json.loads(after["run_card.json"])["summary"]["steps"] == 2


# -- --resume ------------------------------------------------------------------------------------------


def test_resume_on_a_finished_run_changes_nothing(tmp_path, random_policy, parity_math_verifier, capsys,
                                                  monkeypatch):  # fmt: skip
    run_dir = tmp_path / "runs" / "x"
    assert main(["train", *_args(tmp_path, random_policy, "x")]) == 0
    card = json.loads((run_dir / "run_card.json").read_text())["summary"]
    assert None not in (card["eval_after"], card["final_reward_accuracy"], card["seconds_per_step"])
    before = _files(run_dir)
    capsys.readouterr()

    monkeypatch.setattr(
        conspo.trainer.loop, "load_policy", lambda *a, **k: pytest.fail("the model was loaded")
    )
    assert main(["train", *_args(tmp_path, random_policy, "x"), "--resume"]) == 0
    assert (
        f"{run_dir} is a finished run (3 steps); nothing to resume, nothing changed"
        in capsys.readouterr().out
    )
    assert _files(run_dir) == before
    result = train(load_config(TrainConfig, None, _args(tmp_path, random_policy, "x")), resume=True)
    assert result.already_finished and result.steps_done == 3 and result.eval_after == card["eval_after"]
    assert _files(run_dir) == before


def test_resume_without_a_checkpoint_is_a_clear_message(tmp_path, random_policy, capsys, no_model):
    run_dir = tmp_path / "runs" / "x"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("steps: 3\n")  # what a run killed before its first checkpoint leaves
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n')
    assert main(["train", *_args(tmp_path, random_policy, "x"), "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"conspo train: --resume: no checkpoint under {run_dir} (it holds config.yaml, metrics.jsonl)"
    )
    assert "--overwrite" in err and "Traceback" not in err
    assert main(["train", *_args(tmp_path, random_policy, "never"), "--resume"]) == 2
    assert "the folder is empty or missing" in capsys.readouterr().err
    assert main(["train", *_args(tmp_path, random_policy, "x"), "--resume", "--overwrite"]) == 2
    assert "contradict" in capsys.readouterr().err


def test_resume_run_name_resumes_that_run(tmp_path, random_policy, parity_math_verifier):
    run_dir = tmp_path / "runs" / "x"
    assert main(["train", *_args(tmp_path, random_policy, "x", "stop_after=1")]) == 0
    assert [p.name for p in run_dir.glob("checkpoint-*")] == ["checkpoint-000001"]
    # argparse reads "run_name=x" as --resume's RUN_DIR; it is the override the user meant.
    others = [a for a in _args(tmp_path, random_policy, "x") if not a.startswith("run_name=")]
    assert main(["train", *others, "--resume", "run_name=x"]) == 0
    assert json.loads((run_dir / "run_card.json").read_text())["summary"]["steps"] == 3
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3]


# -- the default checkpoint cadence --------------------------------------------------------------------


def test_checkpoint_every_minutes_saves_on_the_clock(tmp_path, random_policy, parity_math_verifier):
    cfg = train_config(tmp_path, "checkpoint.every_minutes=1e-9", "checkpoint.keep_last=null", policy=random_policy,
                       run_name="clock", base=[*SMALL, "steps=3", "checkpoint.save_final=false"])  # fmt: skip
    assert TrainConfig().checkpoint.every_minutes == 30.0 and TrainConfig().checkpoint.every == 0
    train(cfg)
    assert sorted(p.name for p in (tmp_path / "clock").glob("checkpoint-*")) == [
        "checkpoint-000001",
        "checkpoint-000002",
    ]
    cfg = train_config(tmp_path, "checkpoint.every_minutes=null", policy=random_policy, run_name="no-clock",
                       base=[*SMALL, "steps=3", "checkpoint.save_final=false"])  # fmt: skip
    train(cfg)
    assert not list((tmp_path / "no-clock").glob("checkpoint-*"))
    for bad in ("0", "-1"):
        with pytest.raises(ConfigError) as info:
            load_config(TrainConfig, None, [f"checkpoint.every_minutes={bad}"]).validate()
        assert info.value.field == "checkpoint.every_minutes"


# -- a full disk --------------------------------------------------------------------------------------


def test_a_full_disk_keeps_the_older_checkpoints_and_says_how_to_resume(tmp_path, random_policy,
                                                                        parity_math_verifier, capsys, monkeypatch):  # fmt: skip
    import errno

    import conspo.trainer.checkpoint as checkpoint

    real, calls = checkpoint._save_weights, []

    def fill_up(model, path):
        calls.append(path)
        if len(calls) == 3:  # the third checkpoint finds the disk full half-way through its weights
            path.write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(model, path)

    monkeypatch.setattr(checkpoint, "_save_weights", fill_up)
    argv = ["train", *_args(tmp_path, random_policy, "x", "steps=5", "checkpoint.every=1")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    run_dir = tmp_path / "runs" / "x"
    assert "checkpoint-000003: no space left on device while saving it" in err
    assert "the newest checkpoint is checkpoint-000002. Continue from it with:" in err
    assert f"--resume {run_dir}" in err and "Traceback" not in err
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(("checkpoint-", ".tmp"))) == [
        "checkpoint-000001",
        "checkpoint-000002",
    ]  # the partial copy is gone, the older ones are complete
    assert checkpoint.latest_checkpoint(run_dir).name == "checkpoint-000002"
    monkeypatch.setattr(
        checkpoint, "_save_weights", real
    )  # space freed: the printed command continues the run
    assert (
        main(["train", *_args(tmp_path, random_policy, "x", "steps=5", "checkpoint.every=1"), "--resume"])
        == 0
    )
    assert json.loads((run_dir / "run_card.json").read_text())["summary"]["steps"] == 5


# -- Ctrl-C and SIGTERM ----------------------------------------------------------------------------------


def _start(tmp_path: Path, policy: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "conspo.cli", "train", *_args(tmp_path, policy, "sig", "steps=40", *extra)]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())


def _wait_for_steps(tmp_path: Path, proc: subprocess.Popen, rows: int) -> None:
    metrics = tmp_path / "runs" / "sig" / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= rows):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never logged its first steps"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_finishes_the_step_keeps_a_checkpoint_and_says_how_to_resume(tmp_path, random_policy, sig):
    proc = _start(tmp_path, random_policy)
    _wait_for_steps(tmp_path, proc, 3)  # the eval at step 0 and steps 1, 2
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + sig, err
    match = re.search(rf"stopped by {sig.name} after step (\d+) of 40; kept (checkpoint-\d+) in", err)
    assert match, err
    step, kept = int(match.group(1)), match.group(2)
    run_dir = tmp_path / "runs" / "sig"
    assert kept == f"checkpoint-{step:06d}" and (run_dir / kept / "checkpoint.json").exists()
    logged = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(step + 1))  # every finished step's metrics, nothing more
    assert "Traceback" not in err
    if sig != signal.SIGINT:
        return
    # The exact command it printed continues the run to the end.
    command = shlex.split(err.split("Continue with:")[1].strip().splitlines()[0])
    assert command[:2] == ["conspo", "train"] and command[-2:] == ["--resume", str(run_dir)]
    done = subprocess.run([sys.executable, "-m", "conspo.cli", *command[1:]], capture_output=True, text=True,
                          env=child_env(), timeout=400)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads((run_dir / "run_card.json").read_text())["summary"]["steps"] == 40
    logged = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged == list(range(41))


@pytest.mark.slow
def test_a_second_ctrl_c_aborts_at_once(tmp_path, random_policy):
    # 120-token completions (the tiny policy's context is 128): a step lasts long enough that the second
    # Ctrl-C lands inside it.
    proc = _start(tmp_path, random_policy, "rollout.max_new_tokens=120", "checkpoint.every=1")
    _wait_for_steps(tmp_path, proc, 2)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "conspo train: aborted after " in err and "the newest checkpoint is checkpoint-" in err
    assert "--resume" in err and "Traceback" not in err
