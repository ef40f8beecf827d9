"""Two processes on CPU (accelerate launch, gloo): each owns whole groups, and the weights stay identical."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from trainer_support import SMALL, child_env, save_random_policy

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import conspo.rewards
    from conspo.config import load_config
    from conspo.trainer.config import TrainConfig
    from conspo.trainer.loop import Trainer
    from trainer_support import ParityVerifier  # the tests folder is on PYTHONPATH (child_env)

    conspo.rewards.reward_fn.MathVerifier = ParityVerifier
    out, overrides = sys.argv[1], sys.argv[2:]
    trainer = Trainer(load_config(TrainConfig, None, overrides))
    initial = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in trainer.model.parameters())).hexdigest()
    result = trainer.run()
    final = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in trainer.model.parameters())).hexdigest()
    with open(f"{out}/rank{trainer.dist.rank}.json", "w") as f:
        json.dump({"world": trainer.dist.world_size, "initial": initial, "final": final,
                   "kept": [m.get("groups/kept") for m in result.history],
                   "eval_after": result.eval_after}, f)
    """
)


@pytest.mark.slow
def test_two_cpu_processes_stay_in_sync(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    save_random_policy(tmp_path / "policy")
    overrides = [
        "steps=2",
        "seed=1",
        *SMALL,  # 4 prompts per step: 2 (whole groups) per process
        "batch.micro_batch_size=2",
        "eval.at_start=false",
        "checkpoint.save_final=false",
        f"output_dir={tmp_path}",
        "run_name=ddp",
        f"model.name_or_path={tmp_path / 'policy'}",
    ]
    env = child_env(OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(script),
        str(tmp_path),
        *overrides,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["initial"] == ranks[1]["initial"]
    assert ranks[0]["final"] == ranks[1]["final"], "the two processes' weights diverged"
    assert ranks[0]["kept"] == ranks[1]["kept"]  # the reduced metrics agree
    assert ranks[0]["eval_after"] == ranks[1]["eval_after"]
    assert any(ranks[0]["kept"]), "the parity verifier must give valid groups"
    assert ranks[0]["final"] != ranks[0]["initial"], "an update happened"
    # Written once, by the main process: one row per step (a second writer would duplicate or interleave
    # them), holding the reduced metrics both ranks report.
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert [r.get("groups/kept") for r in rows] == ranks[0]["kept"]
