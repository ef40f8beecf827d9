"""``conspo testbed``: tasks, warmup (into a cache and --out) and info."""

from __future__ import annotations

import pytest

from conspo.cli import main


def test_tasks_lists_every_task_with_an_example(capsys):
    assert main(["testbed", "tasks"]) == 0
    out = capsys.readouterr().out
    for name in ("add", "mul", "chain", "varchain"):
        assert f"\n{name} " in f"\n{out}"
    assert out.count("\\boxed{") == 4


@pytest.mark.slow
def test_warmup_out_and_info(tmp_path, capsys):
    cache, out_dir = tmp_path / "cache", tmp_path / "policy"
    args = [
        "testbed",
        "warmup",
        "--steps",
        "2",
        "--seed",
        "5",
        "--cache-dir",
        str(cache),
        "--out",
        str(out_dir),
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "held-out accuracy at temperature 1" in printed and f"copied to {out_dir}" in printed
    assert (out_dir / "model.safetensors").exists() and (out_dir / "tokenizer.json").exists()
    assert main(["testbed", "info", str(out_dir)]) == 0
    assert "seed 5" in capsys.readouterr().out
    # info by configuration finds the cached copy; an unbuilt configuration says how to build it
    assert main(["testbed", "info", "--steps", "2", "--seed", "5", "--cache-dir", str(cache)]) == 0
    assert main(["testbed", "info", "--steps", "3", "--cache-dir", str(cache)]) == 1
    assert "conspo testbed warmup" in capsys.readouterr().out


def test_bad_configuration_and_missing_action(capsys):
    assert main(["testbed", "warmup", "--slip-rate", "1.5"]) == 2
    assert "slip_rate" in capsys.readouterr().err
    assert main(["testbed"]) == 2
