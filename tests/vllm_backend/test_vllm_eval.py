"""`conspo eval --backend vllm`: the trainer's engine class evaluates a model; its greedy answers are HF's."""

from __future__ import annotations

import json

import pytest

from conspo.cli import main
from conspo.testbed import make_task

pytestmark = pytest.mark.slow


def test_eval_backend_vllm_matches_hf_greedy(testbed_policy_dir, tmp_path):
    bench = tmp_path / "add.jsonl"
    problems = make_task("add", seed=0).eval_problems(6)
    bench.write_text(
        "".join(json.dumps({"id": p.id, "problem": p.problem, "answer": p.answer}) + "\n" for p in problems)
    )

    def greedy_samples(backend: str) -> list[tuple]:
        out = tmp_path / backend
        argv = [
            "eval",
            "--model",
            str(testbed_policy_dir),
            "--benchmarks",
            str(bench),
            "--template",
            "testbed",
        ]
        argv += ["--n", "2", "--greedy", "--max-new-tokens", "24", "--backend", backend, "--no-cache"]
        argv += ["--output-dir", str(out), "--verifier-workers", "1", "--quiet"]
        assert main(argv) == 0
        rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
        assert len(rows) == 6 * 3
        return sorted(
            (r["problem_id"], r["completion"], r["correct"]) for r in rows if r["sample_index"] == -1
        )

    vllm = greedy_samples("vllm")
    assert vllm == greedy_samples("hf")
    assert any(correct for *_, correct in vllm) and len({c for _, c, _ in vllm}) > 1
