"""Two processes on CPU (accelerate launch, gloo): each owns whole groups, and the weights stay identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys
    import conspo.rewards
    from conspo.config import load_config
    from conspo.rewards import Verdict
    from conspo.testbed import build_char_tokenizer, build_tiny_model
    from conspo.trainer.config import TrainConfig
    from conspo.trainer.loop import Trainer

    class ParityVerifier:  # even-length completions are correct: mixed groups from a random policy
        def __init__(self, *args, **kwargs): pass
        def __enter__(self): return self
        def __exit__(self, *exc): return None
        def close(self): pass
        def verify_batch(self, completions, answers):
            return [Verdict(float(len(c) % 2 == 0), len(c) % 2 == 0, None, "exact") for c in completions]

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
    from conspo.testbed import build_char_tokenizer, build_tiny_model

    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    tokenizer = build_char_tokenizer()
    build_tiny_model(tokenizer, seed=0).save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    overrides = [
        "steps=2",
        "seed=1",
        "batch.prompts_per_step=4",  # 2 prompts (whole groups) per process
        "batch.group_size=4",
        "batch.micro_batch_size=2",
        "rollout.max_new_tokens=16",
        "eval.at_start=false",
        "eval.max_problems=4",
        "eval.samples=1",
        "logging.tensorboard=false",
        "logging.progress=false",
        "logging.plot=false",
        "checkpoint.save_best=false",
        "checkpoint.save_final=false",
        "num_threads=1",
        f"output_dir={tmp_path}",
        "run_name=ddp",
        f"model.name_or_path={tmp_path / 'policy'}",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
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
    assert (tmp_path / "ddp" / "metrics.jsonl").exists()  # written once, by the main process
