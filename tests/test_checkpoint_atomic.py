"""A kill at any point of a save never leaves a checkpoint that loads wrong; damaged ones are skipped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from conspo.trainer.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)

# Saves checkpoints in a loop; the weights of step k are all equal to k, so a checkpoint that mixes
# two saves or holds a cut-short file is caught by its values, not only by its shape.
SAVER = textwrap.dedent(
    """
    import sys, torch
    from conspo.trainer.checkpoint import save_checkpoint
    model = torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(8)])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    print("ready", flush=True)
    step = 0
    while True:
        step += 1
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(step)
        save_checkpoint(sys.argv[1], step=step, model=model, optimizer=optimizer, scheduler=None,
                        data_state={"cursor": step}, keep_last=2)
        print("saved", step, flush=True)
    """
)


def fresh_model() -> torch.nn.Module:
    return torch.nn.Sequential(*[torch.nn.Linear(256, 256) for _ in range(8)])


@pytest.mark.slow
def test_sigkill_during_saves_leaves_only_loadable_checkpoints(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(run_dir)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert proc.stdout.readline().strip() == "ready"
    # Wait for one complete save (robust to a loaded machine), then kill in the middle of a later one:
    # a save takes tens of milliseconds, so 10 ms after "saved" the process is inside the next.
    assert proc.stdout.readline().startswith("saved")
    time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    latest = latest_checkpoint(run_dir)
    assert latest is not None
    model = fresh_model()
    state = load_checkpoint(latest, model=model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert state.data_state == {"cursor": state.step}
    for p in model.parameters():
        assert torch.all(p == state.step)
    for step, path in list_checkpoints(run_dir):  # every visible one is complete, not just the newest
        model = fresh_model()
        load_checkpoint(path, model=model, restore_rng=False)
        assert all(torch.all(p == step) for p in model.parameters())


def save_two(tmp_path):
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    optimizer.step()
    for step in (1, 2):
        save_checkpoint(tmp_path, step=step, model=model, optimizer=optimizer, scheduler=None, data_state={})
    return model, optimizer


def test_missing_manifest_is_skipped_with_warning(tmp_path):
    model, _ = save_two(tmp_path)
    (tmp_path / "checkpoint-000002" / "checkpoint.json").unlink()
    with pytest.warns(UserWarning, match="checkpoint-000002.*manifest missing"):
        assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-000001"
    with pytest.raises(CheckpointError, match="manifest missing"):
        load_checkpoint(tmp_path / "checkpoint-000002", model=model)


def test_truncated_weights_are_skipped_and_named(tmp_path):
    model, _ = save_two(tmp_path)
    weights = tmp_path / "checkpoint-000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.warns(UserWarning, match="model.safetensors.*truncated"):
        assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-000001"
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(tmp_path / "checkpoint-000002", model=model)


def test_corrupt_optimizer_bytes_give_an_error_naming_the_file(tmp_path):
    model, optimizer = save_two(tmp_path)
    file = tmp_path / "checkpoint-000002" / "optimizer.pt"
    file.write_bytes(b"\0" * file.stat().st_size)  # same size: only loading can tell
    with pytest.raises(CheckpointError, match="optimizer.pt"):
        load_checkpoint(tmp_path / "checkpoint-000002", model=model, optimizer=optimizer)


def test_leftover_temporary_folder_is_invisible_and_cleaned(tmp_path):
    save_two(tmp_path)
    leftover = tmp_path / ".tmp-checkpoint-000003-abc"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-000002"
    save_two(tmp_path)
    assert not leftover.exists()
