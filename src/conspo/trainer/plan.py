"""``conspo train --dry-run``: the resolved plan of a run, without loading weights.

Counts parameters on the ``meta`` device from the model's config (no weight download), and gives a
rough memory estimate: fp32 master weights + gradients + AdamW moments (16 bytes/param), a frozen
reference copy when the objective needs one (with LoRA, ``model.lora``: the frozen base weights, 16
bytes per adapter parameter, and no reference copy: the reference is the base with the adapter disabled), the logits of one micro-batch in fp32, and activations
(~ 34 bytes x hidden x layers per token without gradient checkpointing, ~ 2 x hidden x layers with it).

The model's config is read from a local folder or the Hugging Face cache first. When that fails and the
model is one the paper's recipes use, the config is built from :data:`PUBLISHED_SHAPES` (the published
architecture shapes, so ``--dry-run`` gives a memory estimate offline and without a network round trip);
any other hub id is then fetched from the hub.

The plan also reads and validates ``data.train`` / ``data.eval`` (without downloading: a set only on the hub
is noted, not read) and checks the model's context length: the longest rendered prompt plus
``rollout.max_new_tokens`` (and ``eval.max_new_tokens``) must fit in ``max_position_embeddings``
(:func:`check_context`, which the trainer runs again before its first generation). Either failure raises
:class:`~conspo.config.ConfigError` naming the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from conspo.config import ConfigError
from conspo.trainer.config import TESTBED, TrainConfig

__all__ = [
    "PUBLISHED_SHAPES",
    "ContextCheck",
    "RunPlan",
    "build_plan",
    "check_context",
    "format_plan",
    "published_config",
]

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
    trainable_parameters: int | None  # == num_parameters without LoRA; the adapter's (+ modules_to_save) with
    vocab_size: int | None
    memory_gib: float | None
    memory_breakdown: dict[str, float]
    note: str = ""
    train_problems: int | None = None  # None: not read (only on the hub; the dry run downloads nothing)
    eval_problems: int | None = None
    data_notes: list[str] = field(default_factory=list)
    context: ContextCheck | None = None  # None: no model config or tokenizer to check with offline
    lora_reference: bool = False  # the KL reference is the policy with its LoRA adapter disabled (no copy)


@dataclass(frozen=True)
class ContextCheck:
    """The model's context length against the longest prompt plus the completion budget."""

    context_length: int
    longest_prompt: int  # tokens, over the training and held-out prompts checked
    max_new_tokens: int  # the larger of rollout.max_new_tokens and the evaluation's

    @property
    def headroom(self) -> int:
        return self.context_length - self.longest_prompt - self.max_new_tokens


def check_context(
    cfg: TrainConfig, context_length: int | None, tokenizer: Any, train: Sequence[Any], evals: Sequence[Any]
) -> ContextCheck | None:
    """Refuse, naming the field, a run whose prompts plus completions do not fit in the model's context.

    A model asked for more positions than it was built for does not stop with an error: it generates on
    (slowly, and into garbage) until ``max_new_tokens``. So the run stops here instead, before any generation.
    Returns None when the context length is unknown (no ``max_position_embeddings`` in the config).
    """
    if context_length is None:
        return None
    from conspo.data import render_prompt
    from conspo.eval.models import prompt_token_counts
    from conspo.trainer.setup import prompt_template

    template = prompt_template(cfg)
    rollout_new = cfg.rollout.max_new_tokens
    eval_new = cfg.eval.max_new_tokens or rollout_new
    longest: dict[str, tuple[int, Any]] = {}
    for key, problems in (("data.train", train), ("data.eval", evals)):
        if problems:
            counts = prompt_token_counts(
                tokenizer, [render_prompt(p.problem, tokenizer, template) for p in problems]
            )
            worst = max(range(len(counts)), key=counts.__getitem__)
            longest[key] = (counts[worst], problems[worst])
            too_long = sum(c >= context_length for c in counts)
            if too_long:
                raise ConfigError(
                    key,
                    f"{too_long} of {len(counts)} prompts do not fit in the model's context of {context_length} "
                    f"tokens on their own (longest: {counts[worst]} tokens, problem {problems[worst].id!r}, "
                    f"template {template!r}); drop them from the data or use a model with a longer context",
                )
    for key, budget, data_key in (
        ("rollout.max_new_tokens", rollout_new, "data.train"),
        (
            "eval.max_new_tokens" if cfg.eval.max_new_tokens else "rollout.max_new_tokens",
            eval_new,
            "data.eval",
        ),
    ):
        if data_key not in longest:
            continue
        tokens, problem = longest[data_key]
        if tokens + budget > context_length:
            raise ConfigError(
                key,
                f"{budget} new tokens after the longest {data_key} prompt ({tokens} tokens, problem {problem.id!r}) "
                f"exceed the model's context of {context_length} tokens (config.max_position_embeddings); set "
                f"{key} <= {context_length - tokens}",
            )
    worst_prompt = max((t for t, _ in longest.values()), default=0)
    return ContextCheck(context_length, worst_prompt, max(rollout_new, eval_new))


@dataclass(frozen=True)
class PublishedShape:
    """The fields of a model's ``config.json`` that decide its parameter count (transformers' names)."""

    model_type: str  # "qwen2" | "qwen3" | "llama"
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    head_dim: int | None = None  # None = hidden_size / num_attention_heads


# The published config.json shapes of the models the paper's recipes train (scripts/gen_recipes.py). Values
# read from public copies of each model's config.json on huggingface.co (quantized / fine-tuned derivatives
# whose "_name_or_path" or base_model names the original keep its architecture fields; two sources each).
# "=" gives the meta-device parameter count of the built config, [] the model card's number.
_Q2, _Q3, _LL = "qwen2", "qwen3", "llama"
PUBLISHED_SHAPES: dict[str, PublishedShape] = {
    # = 1.777B [1.78B]; Qwen2.5-Math-1.5B shape, untied embeddings. Sources: rohinm/model/blob/main/config.json,
    # onnx-community/DeepSeek-R1-Distill-Qwen-1.5B-ONNX/blob/main/config.json
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": PublishedShape(_Q2, 1536, 28, 12, 2, 8960, 151936, False),
    # = 7.616B [7.62B]; Qwen2.5-Math-7B shape. Sources: prithivMLmods/QwQ-R1-Distill-7B-CoT/blob/main/config.json,
    # unsloth/DeepSeek-R1-Distill-Qwen-7B-bnb-4bit/blame/main/config.json
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": PublishedShape(_Q2, 3584, 28, 28, 4, 18944, 152064, False),
    # = 32.76B [32.8B]; Qwen2.5-32B shape. Sources: AIFunOver/DeepSeek-R1-Distill-Qwen-32B-openvino-8bit/blob/main/
    # config.json, tttx/model_3k_forcing_3ep_step1/blob/main/config.json
    "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": PublishedShape(_Q2, 5120, 64, 40, 8, 27648, 152064, False),
    # = 8.030B [8.03B]; Llama-3.1-8B shape, head_dim 128. Sources: unsloth/DeepSeek-R1-Distill-Llama-8B-unsloth-
    # bnb-4bit/blame/44fae25e/config.json, neuralmagic/DeepSeek-R1-Distill-Llama-8B-quantized.w8a8/blob/f8cfa562/
    # config.json
    "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": PublishedShape(
        _LL, 4096, 32, 32, 8, 14336, 128256, False, 128
    ),
    # = 4.022B [4.0B]; Qwen3, head_dim 128, tied embeddings. Sources: MegaScience/Qwen3-4B-MegaScience commit
    # 91b3d0f8 config.json (base_model: Qwen/Qwen3-4B-Base), MultiRL/qwen3_4b_instruct_sft/blob/main/config.json
    "Qwen/Qwen3-4B-Base": PublishedShape(_Q3, 2560, 36, 32, 8, 9728, 151936, True, 128),
    # = 3.213B [3.21B]; Llama 3.2, head_dim 128, tied embeddings. Sources: mlx-community/Llama-3.2-3B-bf16/blob/
    # refs%2Fpr%2F1/config.json, datasets/lhpku20010120/Llama-3.2-3B-Instruct/blob/main/config.json
    "meta-llama/Llama-3.2-3B-Instruct": PublishedShape(_LL, 3072, 28, 24, 8, 8192, 128256, True, 128),
}


def published_config(name_or_path: str) -> Any | None:
    """A transformers config built from :data:`PUBLISHED_SHAPES` for ``name_or_path``, or None if not listed."""
    shape = PUBLISHED_SHAPES.get(name_or_path)
    if shape is None:
        return None
    from transformers import AutoConfig

    kwargs: dict[str, Any] = {
        "hidden_size": shape.hidden_size,
        "num_hidden_layers": shape.num_hidden_layers,
        "num_attention_heads": shape.num_attention_heads,
        "num_key_value_heads": shape.num_key_value_heads,
        "intermediate_size": shape.intermediate_size,
        "vocab_size": shape.vocab_size,
        "tie_word_embeddings": shape.tie_word_embeddings,
    }
    if shape.head_dim is not None:
        kwargs["head_dim"] = shape.head_dim
    return AutoConfig.for_model(shape.model_type, **kwargs)


def _read_config(cfg: TrainConfig) -> tuple[Any, str]:
    """The model's config and where it came from ("" = the model's own config.json)."""
    from transformers import AutoConfig

    name = cfg.model.name_or_path
    remote = cfg.model.trust_remote_code
    try:  # a local folder, or the hub cache: no network
        return AutoConfig.from_pretrained(name, trust_remote_code=remote, local_files_only=True), ""
    except Exception:
        config = published_config(name)
        if config is not None:
            return (
                config,
                f"shape of {name} from conspo's built-in table of published shapes (config not read)",
            )
    return AutoConfig.from_pretrained(name, trust_remote_code=remote), ""


def _model_shape(
    cfg: TrainConfig,
) -> tuple[int | None, int | None, int | None, int | None, str, Any, int | None]:
    """(parameters, vocab, hidden, layers, note, the transformers config or None, trainable parameters) from
    the config alone; with LoRA the adapter is built on the meta device too (a module name the model lacks
    raises ConfigError naming ``model.lora.target_modules``)."""
    import torch
    from transformers import AutoModelForCausalLM

    try:
        if cfg.model.name_or_path == TESTBED:
            from conspo.testbed.model import TinyModelConfig, build_tiny_model
            from conspo.testbed.tokenizer import build_char_tokenizer

            with torch.device("meta"):
                model = build_tiny_model(build_char_tokenizer(), TinyModelConfig())
            config, note = model.config, ""
        else:
            config, note = _read_config(cfg)
            with torch.device("meta"):
                model = AutoModelForCausalLM.from_config(
                    config, trust_remote_code=cfg.model.trust_remote_code
                )
        n = sum(p.numel() for p in model.parameters())
        trainable = n
        if cfg.model.lora.enabled:
            from conspo.trainer.lora import apply_lora, trainable_parameters

            with torch.device("meta"):
                trainable = trainable_parameters(apply_lora(cfg.model.lora, model))[0]
        text = getattr(config, "get_text_config", lambda: config)()
        return (
            n,
            getattr(text, "vocab_size", None),
            getattr(text, "hidden_size", None),
            getattr(text, "num_hidden_layers", None),
            note,
            None if note else config,  # a published shape's built config has no real context length
            trainable,
        )
    except ConfigError:
        raise
    except Exception as e:  # offline, unknown architecture: the plan is still useful without memory
        return (
            None,
            None,
            None,
            None,
            f"model config not readable ({type(e).__name__}: {e}); no memory estimate",
            None,
            None,
        )


def _offline_tokenizer(cfg: TrainConfig) -> Any | None:
    """The run's tokenizer when it is at hand without a download (the testbed's is built), else None."""
    if cfg.model.name_or_path == TESTBED and cfg.model.tokenizer is None:
        from conspo.testbed.tokenizer import build_char_tokenizer

        return build_char_tokenizer()
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(
            cfg.model.tokenizer or cfg.model.name_or_path,
            trust_remote_code=cfg.model.trust_remote_code,
            local_files_only=True,
        )
    except Exception:  # not downloaded: the real run checks once it has the tokenizer
        return None


def build_plan(cfg: TrainConfig, num_processes: int = 1) -> RunPlan:
    """Validate ``cfg``, read and validate its data, check the context length and work out the run's sizes
    (cheap: no weights are loaded, nothing is downloaded). Raises ConfigError naming the field."""
    from conspo.eval.models import context_length
    from conspo.trainer.setup import load_run_problems

    cfg.validate(num_processes)
    objective = cfg.build_objective()
    data_notes: list[str] = []
    train, evals = load_run_problems(cfg, notes=data_notes)
    train_read = not any(n.startswith("data.train: not read") for n in data_notes)
    b = cfg.batch
    local_rows = b.prompts_per_step // num_processes * b.group_size
    mb_rows = local_rows // b.mini_batches
    micro = min(b.micro_batch_size or mb_rows, mb_rows)  # >= the mini-batch: one micro-batch
    needs_old = bool(getattr(objective, "needs_old_logps", False)) and b.mini_batches > 1
    needs_ref = bool(getattr(objective, "needs_ref_logps", False))
    n, vocab, hidden, layers, note, model_config, trainable = _model_shape(cfg)
    context = None
    if model_config is not None:
        tokenizer = _offline_tokenizer(cfg)
        length = context_length(model_config)
        if tokenizer is not None and length is not None:
            context = check_context(cfg, length, tokenizer, train, evals)
        elif length is not None:
            data_notes.append(
                f"context length {length} tokens; prompt lengths not checked (tokenizer not available offline)"
            )
    breakdown: dict[str, float] = {}
    total = None
    if n is not None:
        seq = cfg.rollout.max_new_tokens + 256  # INFERRED typical prompt length for the estimate
        weight_bytes = 2 if cfg.model.dtype in ("bfloat16", "float16") else 4
        if cfg.model.lora.enabled and trainable is not None:
            # Frozen base weights; gradients and AdamW moments for the adapter only. The KL reference is the
            # same weights with the adapter disabled: no copy.
            breakdown["weights (frozen base)"] = (n - trainable) * weight_bytes / GiB
            # peft keeps the adapter in float32 on a bf16 / fp16 base (autocast_adapter_dtype)
            breakdown["adapter+grads+adamw"] = trainable * 16 / GiB
            if needs_ref and cfg.model.ref_model is not None:
                breakdown["reference model"] = n * weight_bytes / GiB
        else:
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
        trainable_parameters=trainable,
        vocab_size=vocab,
        memory_gib=total,
        memory_breakdown=breakdown,
        note=note,
        train_problems=len(train) if train_read else None,
        eval_problems=len(evals),
        data_notes=data_notes,
        context=context,
        lora_reference=needs_ref and cfg.model.lora.enabled and cfg.model.ref_model is None,
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
        f"reference model      {'yes' if plan.needs_ref_model else 'no'}"
        + (" (the policy with its LoRA adapter disabled: no copy)" if plan.lora_reference else ""),
    ]
    train = "not read" if plan.train_problems is None else f"{plan.train_problems} problems"
    lines.append(
        f"data                 train: {train}, held-out: {plan.eval_problems} problems (read and valid)"
    )
    if plan.context is not None:
        c = plan.context
        lines.append(
            f"context length       {c.context_length} tokens: longest prompt {c.longest_prompt} + up to "
            f"{c.max_new_tokens} new = {c.longest_prompt + c.max_new_tokens} (fits, {c.headroom} to spare)"
        )
    else:
        lines.append("context length       not checked (model config or tokenizer not available offline)")
    lines += [f"note                 {n}" for n in plan.data_notes]
    if plan.num_parameters is not None:
        lines.append(f"parameters           {plan.num_parameters / 1e6:.2f}M (vocab {plan.vocab_size})")
        t = plan.trainable_parameters
        if t is not None and t != plan.num_parameters:
            lines.append(
                f"trainable            {t / 1e6:.2f}M ({100 * t / plan.num_parameters:.2f}%: LoRA adapter)"
            )
    if plan.memory_gib is not None:
        lines.append(f"memory per process   ~{plan.memory_gib:.2f} GiB (rough)")
        lines += [f"  {k:<34} {v:.3f} GiB" for k, v in plan.memory_breakdown.items()]
    if plan.note:
        lines.append(f"note                 {plan.note}")
    return "\n".join(lines)


def plan_dict(plan: RunPlan) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(plan)
