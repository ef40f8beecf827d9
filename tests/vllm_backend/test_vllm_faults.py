"""A failure inside vLLM ends the run with a message naming the backend, and the last checkpoint stays intact."""

from __future__ import annotations

import pytest
import vllm

from conspo.rollout.vllm import VLLMEngineError
from conspo.trainer.checkpoint import latest_checkpoint
from conspo.trainer.loop import train
from trainer_support import train_config

pytestmark = pytest.mark.slow


def test_a_vllm_crash_ends_the_run_and_keeps_the_last_checkpoint(tmp_path, testbed_policy_dir, monkeypatch):
    calls = {"n": 0}
    real = vllm.LLM.generate

    def crash_on_the_third_call(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:  # steps 1 and 2 sample, step 3 fails inside vLLM
            raise RuntimeError("simulated engine failure")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(vllm.LLM, "generate", crash_on_the_third_call)
    cfg = train_config(
        tmp_path,
        "rollout.backend=vllm",
        "rollout.vllm_kv_cache_gb=0.05",
        "steps=4",
        "checkpoint.every=1",
        "eval.at_start=false",
        "eval.every=0",
        policy=testbed_policy_dir,
    )
    with pytest.raises(VLLMEngineError, match=r"rollout\.backend=vllm.*simulated engine failure"):
        train(cfg)
    last = latest_checkpoint(tmp_path / "t")
    assert last is not None and last.name == "checkpoint-000002"  # the step before the failure, complete
    assert any(last.glob("*.safetensors")) or any(last.rglob("*.safetensors"))
