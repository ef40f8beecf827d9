"""A ``conspo train`` config (a ``TrainConfig``, e.g. a recipe) as TRL ``ConSPOConfig`` options.

What maps where (:data:`TRAIN_CONFIG_MAPPING`), what the launcher uses instead or what does not change the
update (:data:`TRAIN_CONFIG_NOT_MAPPED`), what is refused and why (:data:`TRAIN_CONFIG_REFUSED`), and the
translation itself (:func:`conspo_config_options`, :func:`peft_config_from_train_config`). Plain data: this
module imports neither TRL nor the trainer at import time; ``conspo.integrations.trl`` re-exports it and
builds the ``ConSPOConfig`` (``conspo_config_from_train_config``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from conspo.objectives import objective_class

if TYPE_CHECKING:
    from conspo.trainer.config import TrainConfig

__all__ = [
    "CONSPO_OPTIONS",
    "TRAIN_CONFIG_MAPPING",
    "TRAIN_CONFIG_NOT_MAPPED",
    "TRAIN_CONFIG_REFUSED",
    "conspo_config_options",
    "peft_config_from_train_config",
]

CONSPO_OPTIONS = ("tau", "margin", "margin_max", "margin_warmup")
"""ConSPO hyperparameters that are ``ConSPOConfig`` fields of their own (the rest go in ``objective_kwargs``)."""

# Keys: TrainConfig fields (dotted, comma-separated; "section.*" = every field of a section).
TRAIN_CONFIG_MAPPING: dict[str, str] = {
    "steps": "max_steps = steps x batch.mini_batches (TRL counts optimizer steps)",
    "seed": "seed",
    "output_dir, run_name": "output_dir = <output_dir>/<run_name> (run_name None: trl-<objective>), run_name",
    "device": "use_cpu=True for 'cpu'",
    "model.dtype": "model_init_kwargs['dtype'] ('auto' = float32 master weights, as conspo train)",
    "model.trust_remote_code": "trust_remote_code, model_init_kwargs['trust_remote_code']",
    "model.gradient_checkpointing": "activation_checkpointing (transformers 5's name for gradient_checkpointing)",
    "data.shuffle": "shuffle_dataset",
    "rollout.temperature, rollout.top_p": "temperature, top_p; top_k=0 (pure temperature + top-p, as conspo)",
    "rollout.max_new_tokens": "max_completion_length",
    "objective.name": "objective",
    "objective.params": "tau, margin, margin_max, margin_warmup for 'conspo' (the objective's defaults where a "
    "recipe leaves them out); every other parameter: objective_kwargs",
    "optim.lr, optim.betas, optim.eps, optim.weight_decay": "learning_rate, adam_beta1 / adam_beta2, "
    "adam_epsilon, weight_decay",
    "optim.schedule, optim.warmup_steps, optim.min_lr_ratio": "lr_scheduler_type constant / constant_with_warmup "
    "/ cosine / cosine_with_min_lr (lr_scheduler_kwargs min_lr_rate), warmup_steps",
    "optim.max_grad_norm": "max_grad_norm (None: 0.0, no clipping)",
    "optim.bf16": "bf16 (bf16 autocast), only when CUDA is available and device is not 'cpu', as conspo train",
    "batch.group_size": "num_generations",
    "batch.prompts_per_step, batch.mini_batches, batch.micro_batch_size": "per_device_train_batch_size = "
    "micro_batch_size (None: a process's whole mini-batch); gradient_accumulation_steps = rows of a mini-batch "
    "per process / micro_batch_size; steps_per_generation = mini_batches x gradient_accumulation_steps; so one "
    "generation batch = prompts_per_step x group_size rollouts and mini_batches optimizer steps",
    "batch.update_mode": "conspo_mode",
    "batch.filter_groups": "nothing to set: ConSPOTrainer keeps every group, and the objectives give all-correct "
    "/ all-wrong groups no credit and leave them out of their counts (what dropping them does)",
    "checkpoint.every, checkpoint.keep_last": "save_strategy / save_steps (every x mini_batches), "
    "save_total_limit",
    "logging.tensorboard, logging.wandb, logging.progress": "report_to, disable_tqdm (logging_steps=1)",
    "model.lora.r, model.lora.alpha, model.lora.dropout, model.lora.target_modules, model.lora.modules_to_save": (
        "not a ConSPOConfig field: peft_config_from_train_config(cfg) gives the peft.LoraConfig "
        "(r, lora_alpha, lora_dropout, target_modules with conspo's per-architecture default, modules_to_save) that "
        "examples/train_trl.py passes as ConSPOTrainer(peft_config=...); None when model.lora.r = 0"
    ),
}
"""How each ``TrainConfig`` field reaches :class:`ConSPOConfig`."""

TRAIN_CONFIG_NOT_MAPPED: dict[str, str] = {
    "model.name_or_path, model.tokenizer, data.*, reward.*, num_threads, checkpoint.save_final": "used by the "
    "launcher (examples/train_trl.py): the model, the problems and prompt template, the verifier reward",
    "eval.*, data.eval, data.eval_split, checkpoint.save_best": "no periodic evaluation (TRL's samples at the "
    "training temperature): evaluate the saved checkpoints with `conspo eval`",
    "rollout.vllm_kv_cache_gb, rollout.vllm_gpu_memory_utilization, rollout.vllm_sleep": "conspo's colocated "
    "vLLM engine (rollout.backend=vllm); TRL has its own (use_vllm, vllm_mode, vllm_gpu_memory_utilization)",
    "rollout.batch_size, rollout.backend": "generation is TRL's own (model.generate or vLLM, a process's share of "
    "a generation batch at once)",
    "model.ref_model": "only loaded for a KL term, which ConSPOTrainer refuses (objective kl_coef > 0)",
    "batch.max_sampling_tries": "only used with dynamic sampling (refused)",
    "checkpoint.every_minutes": "conspo's own trainer's time-based cadence; TRL saves by steps only "
    "(checkpoint.every), so set that to bound lost work",
    "logging.jsonl, logging.plot, logging.wandb_project": "TRL logs through report_to (and trainer_state.json "
    "in its checkpoints); W&B reads WANDB_PROJECT",
    "checkpoint.merge_lora": "TRL saves the adapter (adapter_config.json + adapter_model.safetensors); "
    "`conspo eval --model` reads that folder as it is (base from adapter_config.json), or merge it with peft's "
    "merge_and_unload",
}
"""Fields that do not change the update and are not ConSPOConfig options."""

TRAIN_CONFIG_REFUSED: dict[str, str] = {
    "batch.dynamic_sampling": "true is refused: TRL's GRPOTrainer does not refill a batch with valid groups",
    "stop_after": "set is refused: no TRL equivalent that keeps the margin's progress = step / steps",
    "reward.overlong_max_len, reward.format_reward": "set is refused: ConSPOTrainer labels a rollout by its "
    "reward > label_threshold, so reward shaping would change the labels (conspo train labels from correctness)",
}
"""Values :func:`conspo_config_from_train_config` refuses (``ValueError`` listing all of them)."""


def _refusals(cfg: TrainConfig) -> list[str]:
    """The TrainConfig values this path cannot reproduce, each as 'field: why; what to set'."""
    problems = []
    if cfg.batch.dynamic_sampling:
        problems.append(
            "batch.dynamic_sampling=true: TRL's GRPOTrainer has no dynamic sampling (refilling the batch with "
            "valid groups); set batch.dynamic_sampling=false (then it is not the paper's full DAPO baseline)"
        )
    if cfg.stop_after is not None:
        problems.append("stop_after: not supported by the TRL path; set stop_after=null (or lower steps)")
    if cfg.reward.overlong_max_len is not None or cfg.reward.format_reward:
        problems.append(
            "reward.overlong_max_len / reward.format_reward: ConSPOTrainer labels a rollout positive when its "
            "reward is > label_threshold, so a shaped reward would change the labels (conspo train labels from "
            "the verifier's correctness); set reward.overlong_max_len=null and reward.format_reward=0"
        )
    return problems


def _scheduler(cfg: TrainConfig) -> dict[str, Any]:
    o = cfg.optim
    if o.schedule == "constant":
        return {"lr_scheduler_type": "constant_with_warmup" if o.warmup_steps else "constant"}
    if o.min_lr_ratio:
        return {
            "lr_scheduler_type": "cosine_with_min_lr",
            "lr_scheduler_kwargs": {"min_lr_rate": o.min_lr_ratio},
        }
    return {"lr_scheduler_type": "cosine"}


def _objective_options(cfg: TrainConfig) -> dict[str, Any]:
    params = dict(cfg.objective.params)
    options: dict[str, Any] = {"objective": cfg.objective.name}
    if cfg.objective.name == "conspo":
        defaults = {f.name: f.default for f in dataclasses.fields(objective_class("conspo"))}
        for key in CONSPO_OPTIONS:  # the objective's own defaults, which a recipe may leave out
            options[key] = params.pop(key, defaults[key])
    options["objective_kwargs"] = params or None
    return options


def peft_config_from_train_config(cfg: TrainConfig, model_path: str | None = None) -> Any | None:
    """The ``peft.LoraConfig`` of ``cfg.model.lora`` for ``ConSPOTrainer(peft_config=...)``, or None without LoRA.

    The same LoraConfig ``conspo train`` builds (``conspo.trainer.lora.peft_lora_config``): with
    ``target_modules`` None the default for the model's type, read from ``model_path`` (default
    ``model.name_or_path``) without a download, else conspo's table of the recipes' published shapes, else
    ``all-linear``.
    """
    lora = cfg.model.lora
    if not lora.enabled:
        return None
    from conspo.trainer.lora import peft_lora_config

    return peft_lora_config(
        lora, _model_type(model_path or cfg.model.name_or_path, cfg.model.trust_remote_code)
    )


def _model_type(name_or_path: str, trust_remote_code: bool) -> str | None:
    from transformers import AutoConfig

    from conspo.trainer.plan import published_config

    try:
        return AutoConfig.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, local_files_only=True
        ).model_type
    except Exception:  # not local: the published shape, if it is a recipe model
        config = published_config(name_or_path)
        return None if config is None else config.model_type


def conspo_config_options(cfg: TrainConfig, num_processes: int = 1, **overrides: Any) -> dict[str, Any]:
    """The ``ConSPOConfig`` keyword arguments that train what ``cfg`` (a ``conspo train`` config or recipe)
    describes; ``conspo.integrations.trl.conspo_config_from_train_config`` builds the config from them.

    ``num_processes`` is the launch's process count (accelerate's ``WORLD_SIZE``): the batch arithmetic splits
    ``batch.prompts_per_step x batch.group_size`` rollouts over it, as ``conspo train`` does. ``overrides`` are
    ConSPOConfig keyword arguments applied last (``report_to="none"``, ``use_cpu=True``, ...).

    What maps where: :data:`TRAIN_CONFIG_MAPPING`; fields the launcher uses or that do not change the update:
    :data:`TRAIN_CONFIG_NOT_MAPPED`. Raises ``ValueError`` naming every value this path cannot reproduce
    (:data:`TRAIN_CONFIG_REFUSED`: DAPO's dynamic sampling, ``stop_after``, reward shaping) and what to set
    instead, and ``ConfigError`` for an invalid config (``cfg.validate(num_processes)``).

    One difference stays: with ``batch.mini_batches > 1``, ``conspo train`` recomputes ConSPO's credit before each
    mini-batch, while ``ConSPOTrainer`` (decomposed mode) computes it once per generation batch and warns that
    later optimizer steps reuse it (stale credit). ``batch.mini_batches=1`` makes both exact.
    """
    import torch

    cfg.validate(num_processes)
    problems = _refusals(cfg)
    if problems:
        raise ValueError(
            "this config cannot be trained through ConSPOTrainer as it is:\n  - " + "\n  - ".join(problems)
        )
    b = cfg.batch
    rows_per_mini_batch = b.prompts_per_step * b.group_size // (num_processes * b.mini_batches)
    # A micro-batch size at or above the mini-batch is one micro-batch (as conspo train reads it).
    micro = min(b.micro_batch_size or rows_per_mini_batch, rows_per_mini_batch)
    accumulation = rows_per_mini_batch // micro
    dtype = {"auto": "float32"}.get(cfg.model.dtype, cfg.model.dtype)
    on_gpu = torch.cuda.is_available() and cfg.device != "cpu"
    reports = [
        name for name, on in (("tensorboard", cfg.logging.tensorboard), ("wandb", cfg.logging.wandb)) if on
    ]
    options: dict[str, Any] = {
        "output_dir": str(Path(cfg.output_dir) / (cfg.run_name or f"trl-{cfg.objective.name}")),
        "run_name": cfg.run_name,
        "seed": cfg.seed,
        "use_cpu": cfg.device == "cpu",
        "max_steps": cfg.optimizer_steps,
        "model_init_kwargs": {"dtype": dtype, "trust_remote_code": cfg.model.trust_remote_code},
        "trust_remote_code": cfg.model.trust_remote_code,
        "activation_checkpointing": cfg.model.gradient_checkpointing,
        "shuffle_dataset": cfg.data.shuffle,
        "temperature": cfg.rollout.temperature,
        "top_p": cfg.rollout.top_p,
        "top_k": 0,
        "max_completion_length": cfg.rollout.max_new_tokens,
        "num_generations": b.group_size,
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": accumulation,
        "steps_per_generation": b.mini_batches * accumulation,
        "conspo_mode": b.update_mode,
        "learning_rate": cfg.optim.lr,
        "adam_beta1": cfg.optim.betas[0],
        "adam_beta2": cfg.optim.betas[1],
        "adam_epsilon": cfg.optim.eps,
        "weight_decay": cfg.optim.weight_decay,
        "warmup_steps": cfg.optim.warmup_steps,
        **_scheduler(cfg),
        "max_grad_norm": cfg.optim.max_grad_norm or 0.0,
        "bf16": cfg.optim.bf16 and on_gpu,
        "beta": 0.0,
        "save_strategy": "steps" if cfg.checkpoint.every else "no",
        "save_steps": max(cfg.checkpoint.every * b.mini_batches, 1),
        "save_total_limit": cfg.checkpoint.keep_last,
        "report_to": reports or "none",
        "logging_steps": 1,
        "disable_tqdm": not cfg.logging.progress,
        **_objective_options(cfg),
    }
    options.update(overrides)
    return options
