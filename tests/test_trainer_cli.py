"""`conspo train` end to end through the CLI: run folder, final model, run card, plot, before/after table."""

from __future__ import annotations

import json
import re

import pytest

from trainer_support import save_random_policy


@pytest.mark.slow
def test_train_command_writes_a_complete_run_folder(tmp_path, parity_math_verifier, capsys):
    from conspo.cli import main

    save_random_policy(tmp_path / "policy")
    config = tmp_path / "run.yaml"
    config.write_text(
        "steps: 3\nbatch:\n  prompts_per_step: 4\n  group_size: 4\nrollout:\n  max_new_tokens: 12\n"
        "eval:\n  max_problems: 4\n  samples: 2\n  every: 2\nlogging:\n  progress: false\n"
    )
    rc = main(
        [
            "train",
            "--config",
            str(config),
            f"model.name_or_path={tmp_path / 'policy'}",
            f"output_dir={tmp_path / 'runs'}",
            "num_threads=1",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert run_dir.name.endswith("-conspo")
    for name in ("config.yaml", "metrics.jsonl", "run_card.json", "README.md", "curves.png", "final", "best"):
        assert (run_dir / name).exists(), name
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["summary"]["steps"] == 3 and card["config"]["batch"]["group_size"] == 4
    assert card["summary"]["eval_before"] is not None and card["summary"]["eval_after"] is not None
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    # The before/after table prints the held-out accuracies the run measured (step 0 and the last step).
    printed = dict(re.findall(r"\b(before|after)\b\W+([0-9]\.[0-9]{3})", out))
    assert printed == {"before": f"{rows[0]['eval/avg@2']:.3f}", "after": f"{rows[3]['eval/avg@2']:.3f}"}, out
    assert "eval/avg@2" in rows[2] and "eval/avg@2" in rows[3] and "eval/avg@2" not in rows[1]
    for key in ("reward/accuracy", "groups/valid_frac", "conspo/p_pos", "optim/grad_norm", "time/generate"):
        assert key in rows[1], key
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run_dir / "final")
    assert sum(p.numel() for p in model.parameters()) > 0
    assert AutoTokenizer.from_pretrained(run_dir / "final")("1+1")["input_ids"]
    assert list((run_dir / "final").glob("*.safetensors"))
    # the resolved config reruns as it is
    from conspo.config import load_config
    from conspo.trainer.config import TrainConfig

    assert load_config(TrainConfig, run_dir / "config.yaml").steps == 3


@pytest.mark.slow
def test_train_command_resume_continues_a_stopped_run(tmp_path, parity_math_verifier):
    from conspo.cli import main

    save_random_policy(tmp_path / "policy")
    args = [
        "train",
        "steps=3",
        "batch.prompts_per_step=4",
        "batch.group_size=4",
        "rollout.max_new_tokens=12",
        "eval.max_problems=2",
        "eval.samples=1",
        "logging.progress=false",
        "logging.tensorboard=false",
        f"model.name_or_path={tmp_path / 'policy'}",
        f"output_dir={tmp_path / 'runs'}",
        "num_threads=1",
    ]
    assert main([*args, "stop_after=2"]) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    assert (run_dir / "checkpoint-000002").is_dir() and not (run_dir / "final").exists()
    assert main([*args, "--resume"]) == 0  # the newest *-conspo run under output_dir
    assert len(list((tmp_path / "runs").iterdir())) == 1
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["summary"]["steps"] == 3
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1, 2, 3]
