"""LoRA adapters for the trainer (``model.lora``), built with ``peft`` (the ``[peft]`` extra).

* `lora_target_modules` picks the modules that get adapters: every attention and MLP projection for the
  common decoder families (RL with LoRA on attention alone learns less than with the MLP included: Schulman
  et al., "LoRA Without Regret", 2025; verl's default is all-linear too), else peft's own default for the
  model type, else ``all-linear``.
* `apply_lora` wraps a loaded policy in a peft model: base weights frozen, only the adapter (and
  ``modules_to_save``) trainable, so only those reach the optimizer.
* `AdapterDisabled` is the KL reference of a LoRA run: the same model with its adapters disabled (and in
  eval mode, as a frozen copy would be), so the reference costs no memory.
* `is_peft_model`, `adapter_state_dict`, `load_adapter_state_dict`: what checkpoints save and load of a
  LoRA policy (the adapter only; the base comes from ``model.name_or_path`` again on resume).
* `save_merged`: the base model with the adapter merged in, as a plain transformers folder.

Importing this module does not import peft; the functions that need it do.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from conspo.config import ConfigError
from conspo.trainer.config import LoRAConfig

__all__ = [
    "ALL_PROJECTIONS",
    "AdapterDisabled",
    "adapter_state_dict",
    "apply_lora",
    "is_peft_model",
    "load_adapter_state_dict",
    "lora_target_modules",
    "peft_lora_config",
    "save_merged",
    "trainable_parameters",
]

_LLAMA_LIKE = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALL_PROJECTIONS: dict[str, list[str]] = {
    "llama": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "gemma": _LLAMA_LIKE,
    "gemma2": _LLAMA_LIKE,
    "gemma3_text": _LLAMA_LIKE,
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
}
"""model_type -> the attention and MLP projections (the default ``target_modules``)."""


def lora_target_modules(lora: LoRAConfig, model_type: str | None) -> list[str] | str:
    """``model.lora.target_modules``, or the default for ``model_type`` (see the module docstring)."""
    if lora.target_modules is not None:
        names = list(lora.target_modules)
        return "all-linear" if names == ["all-linear"] else names
    if model_type in ALL_PROJECTIONS:
        return list(ALL_PROJECTIONS[model_type])
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS
    except ImportError:  # an older or newer peft layout: all-linear is always understood
        PEFT_DEFAULTS = {}
    if model_type in PEFT_DEFAULTS:
        return list(PEFT_DEFAULTS[model_type])
    return "all-linear"


def peft_lora_config(lora: LoRAConfig, model_type: str | None) -> Any:
    """The ``peft.LoraConfig`` of ``model.lora`` (also what the TRL route passes as ``peft_config``)."""
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.scale_alpha,
        lora_dropout=lora.dropout,
        target_modules=lora_target_modules(lora, model_type),
        modules_to_save=list(lora.modules_to_save) or None,
        bias="none",
        task_type="CAUSAL_LM",
    )


def apply_lora(lora: LoRAConfig, model: Any) -> Any:
    """``model`` wrapped in a peft model with fresh adapters (B = 0: the wrapped model computes what ``model``
    did). Raises ConfigError naming ``model.lora.target_modules`` / ``modules_to_save`` when the model has no
    such module."""
    from peft import get_peft_model

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    config = peft_lora_config(lora, model_type)
    try:
        return get_peft_model(model, config)
    except ValueError as e:  # peft's NoMatchingPeftModuleError is a ValueError
        key = "modules_to_save" if "modules_to_save" in str(e) else "target_modules"
        known = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if _is_linear(m)})
        raise ConfigError(
            f"model.lora.{key}",
            f"{e} (model_type {model_type!r}; its linear layers are named: {', '.join(known)})",
        ) from None


def _is_linear(module: Any) -> bool:
    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def is_peft_model(model: Any) -> bool:
    """``model`` is a peft model (without importing peft when it is not)."""
    return hasattr(model, "peft_config") and callable(getattr(model, "get_base_model", None))


def trainable_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = trainable = 0
    for p in model.parameters():
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return trainable, total


class AdapterDisabled:
    """The KL reference of a LoRA policy: the policy's own forward with its adapters disabled.

    Not a second model: it shares every tensor with the policy. Each call runs in eval mode (dropout off, as
    the frozen copy of a full fine-tuning run is) and restores the policy's mode afterwards. It offers what the
    trainer's no-grad scoring (``conspo.trainer.rows.sequence_forward``) uses: ``parameters()``, ``config``,
    ``get_base_model()`` and the call.
    """

    def __init__(self, policy: Any) -> None:
        if not is_peft_model(policy):
            raise TypeError("AdapterDisabled needs a peft model")
        self.policy = policy

    def parameters(self):
        return self.policy.parameters()

    @property
    def config(self) -> Any:
        return self.policy.config

    def get_base_model(self) -> Any:
        return self.policy.get_base_model()

    def eval(self) -> AdapterDisabled:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        was_training = self.policy.training
        self.policy.eval()
        try:
            with self.policy.disable_adapter():
                return self.policy(*args, **kwargs)
        finally:
            self.policy.train(was_training)


def adapter_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """The adapter's tensors (and ``modules_to_save``), under peft's saved names, contiguous, on the CPU."""
    from peft import get_peft_model_state_dict

    return {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(model).items()}


def load_adapter_state_dict(model: Any, state: dict[str, torch.Tensor], where: str) -> None:
    """Load adapter tensors saved by `adapter_state_dict` into ``model``; ValueError naming ``where`` when the
    names or shapes do not match the model's adapter."""
    from peft import set_peft_model_state_dict

    expected = {k: v.shape for k, v in adapter_state_dict(model).items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{where}: does not match the model's adapter (missing {missing[:5]}, unexpected {unexpected[:5]}); "
            "was it saved with other model.lora settings?"
        )
    wrong = [k for k, shape in expected.items() if tuple(state[k].shape) != tuple(shape)]
    if wrong:
        raise ValueError(
            f"{where}: tensor {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, the model's adapter "
            f"{tuple(expected[wrong[0]])} (another model.lora.r?)"
        )
    result = set_peft_model_state_dict(model, state)
    bad = list(getattr(result, "unexpected_keys", []) or [])
    if bad:
        raise ValueError(f"{where}: peft did not place {bad[:5]}")


def save_merged(
    adapter_dir: Path,
    folder: Path,
    *,
    base: str,
    dtype: torch.dtype | None = None,
    trust_remote_code: bool = False,
) -> Path:
    """Write the base model with the adapter of ``adapter_dir`` merged in (plain transformers weights, no peft)
    to ``folder``, with the tokenizer files of ``adapter_dir``.

    Loads the base again on the CPU rather than copying the trained policy: the device's memory is left as it
    is, and what is merged is exactly what was saved.
    """
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    folder.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(folder, safe_serialization=True)
    with contextlib.suppress(OSError, ValueError):  # no tokenizer beside the adapter: the weights still load
        AutoTokenizer.from_pretrained(adapter_dir, trust_remote_code=trust_remote_code).save_pretrained(
            folder
        )
    return folder
