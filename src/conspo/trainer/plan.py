"""``conspo train --dry-run``: the resolved plan of a run, without loading weights.

Counts parameters on the ``meta`` device from the model's config (no weight download), and gives a
rough memory estimate: fp32 master weights + gradients + AdamW moments (16 bytes/param), a frozen
reference copy when the objective needs one, the logits of one micro-batch in fp32, and activations
(~ 34 bytes x hidden x layers per token without gradient checkpointing, ~ 2 x hidden x layers with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from conspo.trainer.config import TESTBED, TrainConfig

__all__ = ["RunPlan", "build_plan", "format_plan"]

GiB = 1024**3


@dataclass
class RunPlan:
    objective: str
    steps: int
    optimizer_steps: int
    num_processes: int
    prompts_per_step: int
    group_size: int
    rollouts_per_step: int
    max_completion_tokens_per_step: int
    rows_per_micro_batch: int
    micro_batches_per_optimizer_step: int
    needs_old_logps: bool
    needs_ref_model: bool
    num_parameters: int | None
    vocab_size: int | None
    memory_gib: float | None
    memory_breakdown: dict[str, float]
    note: str = ""


def _model_shape(cfg: TrainConfig) -> tuple[int | None, int | None, int | None, int | None, str]:
    """(parameters, vocab, hidden, layers, note) from the config alone."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        if cfg.model.name_or_path == TESTBED:
            from conspo.testbed.model import TinyModelConfig, build_tiny_model
            from conspo.testbed.tokenizer import build_char_tokenizer

            with torch.device("meta"):
                model = build_tiny_model(build_char_tokenizer(), TinyModelConfig())
            config = model.config
        else:
            config = AutoConfig.from_pretrained(
                cfg.model.name_or_path, trust_remote_code=cfg.model.trust_remote_code
            )
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(
                    config, trust_remote_code=cfg.model.trust_remote_code
                )
        n = sum(p.numel() for p in model.parameters())
        text = getattr(config, "get_text_config", lambda: config)()
        return (
            n,
            getattr(text, "vocab_size", None),
            getattr(text, "hidden_size", None),
            getattr(text, "num_hidden_layers", None),
            "",
        )
    except Exception as e:  # offline, unknown architecture: the plan is still useful without memory
        return (
            None,
            None,
            None,
            None,
            f"model config not readable ({type(e).__name__}: {e}); no memory estimate",
        )


def build_plan(cfg: TrainConfig, num_processes: int = 1) -> RunPlan:
    """Validate ``cfg`` and work out the run's sizes (cheap: no weights are loaded)."""
    cfg.validate(num_processes)
    objective = cfg.build_objective()
    b = cfg.batch
    local_rows = b.prompts_per_step // num_processes * b.group_size
    mb_rows = local_rows // b.mini_batches
    micro = b.micro_batch_size or mb_rows
    needs_old = bool(getattr(objective, "needs_old_logps", False)) and b.mini_batches > 1
    needs_ref = bool(getattr(objective, "needs_ref_logps", False))
    n, vocab, hidden, layers, note = _model_shape(cfg)
    breakdown: dict[str, float] = {}
    total = None
    if n is not None:
        seq = cfg.rollout.max_new_tokens + 256  # INFERRED typical prompt length for the estimate
        weight_bytes = 2 if cfg.model.dtype in ("bfloat16", "float16") else 4
        breakdown["weights+grads+adamw"] = n * (weight_bytes + weight_bytes + 8) / GiB
        if needs_ref:
            breakdown["reference model"] = n * weight_bytes / GiB
        if vocab:
            breakdown["logits (one micro-batch, fp32)"] = (
                micro * (cfg.rollout.max_new_tokens + 1) * vocab * 4 / GiB
            )
        if hidden and layers:
            per_token = (2 if cfg.model.gradient_checkpointing else 34) * hidden * layers
            breakdown["activations (one micro-batch)"] = micro * seq * per_token / GiB
        total = sum(breakdown.values())
    return RunPlan(
        objective=cfg.objective.name,
        steps=cfg.steps,
        optimizer_steps=cfg.optimizer_steps,
        num_processes=num_processes,
        prompts_per_step=b.prompts_per_step,
        group_size=b.group_size,
        rollouts_per_step=cfg.rollouts_per_step,
        max_completion_tokens_per_step=cfg.rollouts_per_step * cfg.rollout.max_new_tokens,
        rows_per_micro_batch=micro,
        micro_batches_per_optimizer_step=mb_rows // micro,
        needs_old_logps=needs_old,
        needs_ref_model=needs_ref,
        num_parameters=n,
        vocab_size=vocab,
        memory_gib=total,
        memory_breakdown=breakdown,
        note=note,
    )


def format_plan(plan: RunPlan) -> str:
    """A short human-readable summary."""
    lines = [
        f"objective            {plan.objective}",
        f"RL steps             {plan.steps} ({plan.optimizer_steps} optimizer steps)",
        f"processes            {plan.num_processes}",
        f"per step             {plan.prompts_per_step} prompts x G={plan.group_size} = {plan.rollouts_per_step} rollouts,"
        f" <= {plan.max_completion_tokens_per_step} completion tokens",
        f"per optimizer step   {plan.micro_batches_per_optimizer_step} micro-batches of {plan.rows_per_micro_batch}"
        " rows per process",
        f"old log-probs        {'yes' if plan.needs_old_logps else 'no (on-policy)'}",
        f"reference model      {'yes' if plan.needs_ref_model else 'no'}",
    ]
    if plan.num_parameters is not None:
        lines.append(f"parameters           {plan.num_parameters / 1e6:.2f}M (vocab {plan.vocab_size})")
    if plan.memory_gib is not None:
        lines.append(f"memory per process   ~{plan.memory_gib:.2f} GiB (rough)")
        lines += [f"  {k:<34} {v:.3f} GiB" for k, v in plan.memory_breakdown.items()]
    if plan.note:
        lines.append(f"note                 {plan.note}")
    return "\n".join(lines)


def plan_dict(plan: RunPlan) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(plan)
