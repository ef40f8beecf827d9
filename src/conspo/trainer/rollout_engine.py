"""The trainer's generator for ``rollout.backend``, and the colocated vLLM engine's lifecycle in a run.

``hf`` and ``kv_cache`` generators are cheap and made per call. ``vllm`` keeps one engine per trainer
(``trainer._vllm_engine``), built on first use from the policy's current weights (after a resume too), shared by
rollouts and the trainer's evaluation, and given the new weights in place after every update
(:func:`sync_rollout_engine`, called by `conspo.trainer.step.run_step` inside the ``update`` phase).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from conspo.rollout import ChunkedGenerator, Rollout
    from conspo.trainer.loop import Trainer

__all__ = ["close_rollout_engine", "logprob_mismatch", "rollout_generator", "sync_rollout_engine"]


def _engine(trainer: Trainer) -> Any:
    engine = getattr(trainer, "_vllm_engine", None)
    if engine is not None:
        return engine
    from conspo.rollout.vllm import VLLMEngine

    cfg = trainer.cfg
    if trainer.dist.enabled:
        raise NotImplementedError("rollout.backend=vllm runs in one process; launch without torchrun")
    if cfg.model.lora.r > 0:
        raise NotImplementedError("rollout.backend=vllm does not sync LoRA adapters yet; use model.lora.r=0")
    engine = VLLMEngine(
        trainer.model,
        kv_cache_gb=cfg.rollout.vllm_kv_cache_gb,
        gpu_memory_utilization=cfg.rollout.vllm_gpu_memory_utilization,
        seed=cfg.seed,
        enable_sleep_mode=cfg.rollout.vllm_sleep,
    )
    trainer._vllm_engine = engine
    return engine


def rollout_generator(trainer: Trainer, batch_size: int) -> ChunkedGenerator:
    """The generator of ``trainer.cfg.rollout.backend`` over the trainer's model (vllm: the run's engine)."""
    from conspo.rollout import make_generator

    backend = trainer.cfg.rollout.backend
    if backend != "vllm":
        return make_generator(trainer.model, trainer.tokenizer, backend=backend, batch_size=batch_size)
    from conspo.rollout.vllm import VLLMGenerator

    return VLLMGenerator(trainer.model, trainer.tokenizer, batch_size, engine=_engine(trainer))


def sync_rollout_engine(trainer: Trainer) -> None:
    """After the update: the engine (if any) gets the model's new weights in place."""
    engine = getattr(trainer, "_vllm_engine", None)
    if engine is not None:
        engine.sync_weights(trainer.model)


def sleep_rollout_engine(trainer: Trainer) -> None:
    """Before the update: free the engine's memory where vLLM supports it (``rollout.vllm_sleep``, CUDA)."""
    engine = getattr(trainer, "_vllm_engine", None)
    if engine is not None:
        engine.sleep()


def close_rollout_engine(trainer: Trainer) -> None:
    engine = getattr(trainer, "_vllm_engine", None)
    if engine is not None:
        engine.close()
        trainer._vllm_engine = None


def logprob_mismatch(trainer: Trainer, rollouts: list[Rollout], sampler_logps: list[list[float]]) -> float:
    """Mean |trainer log-prob - sampler log-prob| per completion token (a metric; never used in the loss)."""
    from conspo.rollout import completion_logprobs

    with torch.no_grad(), trainer._autocast():
        logps, mask = completion_logprobs(
            trainer.model, rollouts, pad_token_id=trainer.pad_id, temperature=trainer.cfg.rollout.temperature
        )
    ref = torch.zeros_like(logps)
    for row, values in enumerate(sampler_logps):
        ref[row, : len(values)] = torch.tensor(values, dtype=ref.dtype)
    m = mask.float()
    return float(((logps.float().cpu() - ref.cpu()).abs() * m.cpu()).sum() / m.sum().clamp(min=1.0))
