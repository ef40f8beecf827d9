"""Which models an evaluation runs on, and loading them: paths, hub ids and run directories."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "ModelSpec",
    "adapter_base",
    "check_model_loads",
    "context_length",
    "default_template",
    "expand_models",
    "load_model",
    "prompt_token_counts",
]

_STEP_RE = re.compile(r"^checkpoint-(\d+)$")
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")  # name or owner/name
# Where configs keep the longest sequence (prompt + completion) the model was built for, most specific first.
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
_NO_LIMIT = 10**7  # tokenizers and some configs write 1e30-style "no limit" sentinels
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass(frozen=True)
class ModelSpec:
    """One model to evaluate: a label for tables, where the weights are, where the tokenizer is."""

    label: str
    path: str
    tokenizer: str


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() or adapter_base(path) is not None


def adapter_base(path: str | Path) -> str | None:
    """The base model of a LoRA adapter folder (peft's ``adapter_config.json``, as ``conspo train`` with
    ``model.lora`` writes in ``final`` and its checkpoints), or None when ``path`` holds no adapter."""
    file = Path(path).expanduser() / "adapter_config.json"
    if not file.is_file() or (file.parent / "config.json").is_file():
        return None
    import json

    try:
        base = json.loads(file.read_text()).get("base_model_name_or_path")
    except (OSError, ValueError, AttributeError):
        return None
    return str(base) if base else None


def _has_tokenizer(path: Path) -> bool:
    return any((path / name).is_file() for name in _TOKENIZER_FILES)


def _find_tokenizer(model_dir: Path) -> str:
    # Trainer checkpoints hold weights and config only; the tokenizer sits in the run directory or `final`
    # (a LoRA checkpoint's: else the adapter's base model).
    for candidate in (model_dir, model_dir.parent, model_dir.parent / "final"):
        if candidate.is_dir() and _has_tokenizer(candidate):
            return str(candidate)
    return adapter_base(model_dir) or str(model_dir)


def default_template(model_path: str) -> str:
    """The prompt template a model was trained with, when its folder says so; else ``"default"``.

    A testbed policy (``testbed.json`` beside the weights) answers bare problems, and so does a model trained
    by ``conspo train`` on the testbed: its run folder's ``config.yaml`` names the template or the data.
    """
    path = Path(model_path).expanduser()
    if not path.is_dir():
        return "default"
    if (path / "testbed.json").is_file():
        return "testbed"
    # final/merged (checkpoint.merge_lora): the run folder is two levels up
    folders = (path, path.parent, path.parent.parent) if path.name == "merged" else (path, path.parent)
    for folder in folders:
        config = folder / "config.yaml"
        if not config.is_file():
            continue
        import yaml

        try:
            data = (yaml.safe_load(config.read_text()) or {}).get("data") or {}
        except (OSError, yaml.YAMLError, AttributeError):
            return "default"
        if data.get("template"):
            return str(data["template"])
        return "testbed" if data.get("train") == "testbed" else "default"
    return "default"


def context_length(config: Any) -> int | None:
    """The longest sequence (prompt + completion) a model holds, from its transformers config; None if unknown.

    ``max_position_embeddings`` for most models (Llama, Qwen, Mistral), ``n_positions`` for GPT-2 style ones;
    multimodal configs are read through their text config.
    """
    text = getattr(config, "get_text_config", lambda: config)()
    for key in _CONTEXT_KEYS:
        value = getattr(text, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value < _NO_LIMIT:
            return value
    return None


def prompt_token_counts(tokenizer: Any, prompts: Sequence[str]) -> list[int]:
    """Tokens each rendered prompt takes in the model, counted as the generators feed it (BOS added unless the
    prompt already starts with it: ``conspo.rollout.HFGenerator.encode_prompt``); one batched call per case."""
    bos = getattr(tokenizer, "bos_token", None)
    has_bos = [isinstance(bos, str) and bool(bos) and p.startswith(bos) for p in prompts]
    counts = [0] * len(prompts)
    for flag in (False, True):
        rows = [i for i, b in enumerate(has_bos) if b is flag]
        if rows:
            encoded = tokenizer([prompts[i] for i in rows], add_special_tokens=not flag)["input_ids"]
            for i, ids in zip(rows, encoded):
                counts[i] = len(ids)
    return counts


def expand_models(models: list[str], tokenizer: str | None = None) -> list[ModelSpec]:
    """Turn ``--model`` values into :class:`ModelSpec` s.

    A folder with ``config.json`` is one model, and so is a LoRA adapter folder (``adapter_config.json``: loaded
    on the base model it names, merged). A folder without one but with ``checkpoint-*`` or
    ``final`` subfolders (a training run) expands into those, in step order, ``final`` last. Anything
    else is taken as a Hugging Face hub id. Labels are folder names, made unique by prefixing the
    parent's name when two collide.
    """
    specs: list[tuple[str, str, str]] = []
    for value in models:
        path = Path(value).expanduser()
        if path.is_dir() and not _is_model_dir(path):
            children = [c for c in path.iterdir() if c.is_dir() and _is_model_dir(c)]
            steps = sorted((int(m.group(1)), c) for c in children if (m := _STEP_RE.match(c.name)))
            found = [c for _, c in steps] + [c for c in children if c.name == "final"]
            if not found:
                raise ValueError(
                    f"--model {value}: folder has no config.json and no checkpoint-*/final model subfolders"
                )
            specs += [(f"{path.name}/{c.name}", str(c), tokenizer or _find_tokenizer(c)) for c in found]
        elif path.is_dir():
            specs.append((path.name, str(path), tokenizer or _find_tokenizer(path)))
        elif path.exists():
            raise ValueError(f"--model {value}: is a file, expected a model folder or a hub id")
        elif _looks_like_path(value):
            raise ValueError(f"--model {value}: no such folder ({path.resolve()} does not exist)")
        else:
            specs.append((value, value, tokenizer or value))
    labels = [label for label, _, _ in specs]
    result = []
    for label, model, tok in specs:
        if labels.count(label) > 1 and Path(model).is_dir():
            label = f"{Path(model).parent.name}/{Path(model).name}"
        result.append(ModelSpec(label, model, tok))
    if len({s.path for s in result}) != len(result):
        raise ValueError("--model: the same model is listed twice")
    return result


def _looks_like_path(value: str) -> bool:
    """A --model value no hub id could be: absolute, ./ ../ ~, a backslash, or more than one slash."""
    return value.startswith(("/", ".", "~")) or "\\" in value or not _HUB_ID.fullmatch(value)


def check_model_loads(spec: ModelSpec, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Load the config and tokenizer (cheap) so a bad path fails before any generation; returns both."""
    from transformers import AutoConfig, AutoTokenizer

    base = adapter_base(spec.path)
    try:
        config = AutoConfig.from_pretrained(base or spec.path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # any failure here means "this model does not load"
        if base is not None:
            raise ValueError(
                f"LoRA adapter {spec.path!r}: its base model {base!r} (adapter_config.json "
                f"base_model_name_or_path) does not load: {type(exc).__name__}: {exc}"
            ) from None
        if Path(spec.path).exists():
            where = "a local folder"
        elif _looks_like_path(spec.path):
            where = "no such folder"
        else:
            where = "not a local folder; as a hub id: offline, or not on the hub"
        raise ValueError(
            f"model {spec.path!r} ({where}) does not load: {type(exc).__name__}: {exc}"
        ) from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer, trust_remote_code=trust_remote_code)
    except Exception as exc:
        raise ValueError(
            f"tokenizer for model {spec.path!r} does not load from {spec.tokenizer!r}: "
            f"{type(exc).__name__}: {exc}; pass --tokenizer PATH"
        ) from None
    return config, tokenizer


def load_model(
    spec: ModelSpec, device: str = "auto", dtype: str = "auto", trust_remote_code: bool = False
) -> Any:
    """``(model, tokenizer)`` on ``device`` (auto: CUDA if available) in ``dtype`` (auto: bf16 on CUDA, fp32 on CPU)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") else "float32"
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise ValueError(f"--dtype {dtype!r} is not a torch dtype (float32, bfloat16, float16)")
    base = adapter_base(spec.path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            base or spec.path, dtype=torch_dtype, trust_remote_code=trust_remote_code
        )
        if base is not None:  # a LoRA adapter on its base model, merged in (the same outputs, faster)
            try:
                from peft import PeftModel
            except ImportError:
                raise ValueError(
                    "is a LoRA adapter; loading it needs peft: pip install 'conspo[peft]'"
                ) from None
            model = PeftModel.from_pretrained(model, spec.path).merge_and_unload()
    except Exception as exc:
        raise ValueError(f"model {spec.path!r} does not load: {type(exc).__name__}: {exc}") from None
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer, trust_remote_code=trust_remote_code)
    return model.to(device).eval(), tokenizer
