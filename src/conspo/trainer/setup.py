"""What a run needs before its first step: run folder, policy, reference model, problems, template, optimizer."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import torch

from conspo.trainer.config import TESTBED, OptimConfig, TrainConfig, lr_at
from conspo.trainer.distributed import Distributed

__all__ = [
    "build_optimizer",
    "load_policy",
    "load_reference",
    "load_run_problems",
    "prompt_template",
    "resolve_run_dir",
    "warn_train_eval_overlap",
]

logger = logging.getLogger(__name__)


def resolve_run_dir(cfg: TrainConfig, dist: Distributed, resume: bool | str | Path) -> Path:
    """``--resume RUN_DIR``; else output_dir/run_name; else the newest ``*-<objective>`` run (resume) or a new
    ``<timestamp>-<objective>`` folder (the same on every process)."""
    if isinstance(resume, (str, Path)) and not isinstance(resume, bool):
        return Path(resume)
    root = Path(cfg.output_dir)
    if cfg.run_name:
        return root / cfg.run_name
    if resume:
        runs = sorted((p for p in root.glob(f"*-{cfg.objective.name}") if p.is_dir()), key=lambda p: p.name)
        if not runs:
            raise FileNotFoundError(f"--resume: no run folder *-{cfg.objective.name} under {root}")
        return runs[-1]
    now = int(time.time())
    if dist.enabled:  # every process must agree on the folder: use rank 0's clock
        now = int(dist.all_reduce_sum(torch.tensor([now if dist.is_main else 0], dtype=torch.long)).item())
    return root / f"{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}-{cfg.objective.name}"


def load_policy(cfg: TrainConfig, dist: Distributed) -> tuple[Any, Any, str]:
    """(model in train mode on the run's device, tokenizer, the folder or id it came from)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = cfg.model.name_or_path
    if path == TESTBED:
        from conspo.testbed import ensure_testbed_policy

        kwargs: dict[str, Any] = {"task": cfg.data.testbed_task}
        if cfg.data.testbed_difficulty is not None:
            kwargs["difficulty"] = cfg.data.testbed_difficulty
        if dist.is_main:  # build (once) before the other processes read it
            path = str(ensure_testbed_policy(log=lambda msg: print(f"[testbed] {msg}", flush=True), **kwargs))
        dist.barrier()
        if not dist.is_main:
            path = str(ensure_testbed_policy(**kwargs))
    dtype = {
        "auto": torch.float32,
        "float32": torch.float32,
        "bfloat16": torch.bfloat16,
        "float16": torch.float16,
    }
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype[cfg.model.dtype], trust_remote_code=cfg.model.trust_remote_code
    ).to(dist.device)
    tokenizer = AutoTokenizer.from_pretrained(
        cfg.model.tokenizer or path, trust_remote_code=cfg.model.trust_remote_code
    )
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()  # also makes the embeddings' output require grad (peft needs it)
        model.config.use_cache = False
    if cfg.model.lora.enabled:  # base frozen, only the adapter trainable (and so in the optimizer)
        from conspo.trainer.lora import apply_lora

        model = apply_lora(cfg.model.lora, model)
    model.train()
    return model, tokenizer, str(path)


def load_reference(cfg: TrainConfig, policy: Any, device: torch.device) -> Any:
    """A frozen reference policy: ``model.ref_model`` or a copy of the initial policy; with LoRA (and no
    ``model.ref_model``) the policy itself with its adapters disabled, which is the initial policy without a copy."""
    if cfg.model.ref_model is None and cfg.model.lora.enabled:
        from conspo.trainer.lora import AdapterDisabled

        return AdapterDisabled(policy)
    if cfg.model.ref_model is None:
        ref = copy.deepcopy(policy)
    else:
        from transformers import AutoModelForCausalLM

        ref = AutoModelForCausalLM.from_pretrained(cfg.model.ref_model).to(device)
    ref.eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    return ref


def prompt_template(cfg: TrainConfig) -> str:
    """``data.template``, else 'testbed' on the testbed (what its policy was warm-started with), else 'default'."""
    if cfg.data.template is not None:
        return cfg.data.template
    return "testbed" if cfg.data.train == TESTBED else "default"


def _read_checked(
    key: str, name: str, split: str | None, cfg: TrainConfig, limit: int | None, notes: list[str] | None
) -> list[Any] | None:
    """Problems of ``data.train`` / ``data.eval``; a ConfigError naming the field, in one line, when they do not
    load; bad rows dropped (and counted in a warning) with ``data.on_error=skip``. With ``notes`` (the dry run)
    nothing is downloaded: a hub-only set gives None and a note."""
    from conspo.config import ConfigError
    from conspo.data import DataError, NotLocalError, read_problems

    try:
        problems, report = read_problems(
            name, split=split, data_dir=cfg.data.data_dir, limit=limit, allow_hub=notes is None
        )
    except NotLocalError as e:
        notes.append(f"{key}: not read ({e})")  # type: ignore[union-attr]
        return None
    except DataError as e:
        raise ConfigError(key, " ".join(str(e).split())) from None
    except OSError as e:  # unreadable file (permissions, a device)
        raise ConfigError(key, f"cannot read {name!r}: {e}") from None
    if report.issues:
        first = report.issues[0]
        if cfg.data.on_error == "raise":
            more = f" (and {report.skipped - 1} more)" if report.skipped > 1 else ""
            raise ConfigError(
                key,
                f"{report.skipped} invalid row(s) in {name}; first: {first}{more}. Fix them, or set "
                "data.on_error=skip to train without them",
            )
        message = (
            f"{key}: skipped {report.skipped} invalid row(s) of {report.rows} in {name} "
            f"(data.on_error=skip; first: {first})"
        )
        if notes is not None:
            notes.append(message)
        else:
            logger.warning("%s", message)
    return problems


def load_run_problems(cfg: TrainConfig, notes: list[str] | None = None) -> tuple[list[Any], list[Any]]:
    """(training problems, held-out problems) as ``conspo.data.Problem`` lists.

    Reads and validates ``data.train`` and ``data.eval`` (cheap: no model); the trainer calls it before any
    model loads and ``--dry-run`` calls it too. Raises :class:`~conspo.config.ConfigError` naming the field.
    ``notes``: the dry run's mode: downloads nothing (a hub-only set comes back empty) and appends what it
    skipped to the list instead of logging it.
    """
    from conspo.config import ConfigError

    d = cfg.data
    eval_n = cfg.eval.max_problems
    evals: list[Any] = []
    train: list[Any] | None
    if d.train == TESTBED:
        from conspo.testbed import make_task

        task = make_task(d.testbed_task, seed=cfg.seed, difficulty=d.testbed_difficulty)
        train = task.train_problems(d.max_train_problems or 2000)
        if d.eval in (None, TESTBED):
            evals = task.eval_problems(eval_n or 64)
    else:
        # max_train_problems stops the read early: the first N valid problems of the file, as before.
        train = _read_checked("data.train", d.train, d.split, cfg, d.max_train_problems, notes)
    if d.eval not in (None, TESTBED):
        evals = _read_checked("data.eval", d.eval, d.eval_split, cfg, eval_n, notes) or []
    if eval_n is not None:
        evals = evals[:eval_n]
    if train is None:  # only on the hub, and the dry run downloads nothing
        return [], evals
    if not train:
        raise ConfigError("data.train", f"{d.train!r} holds no problems")
    return train, evals


def warn_train_eval_overlap(train: list[Any], evals: list[Any], log: bool = True) -> int:
    """How many held-out problems also appear in the training problems (``conspo.data.check_overlap``: same
    normalized text); logs one warning with the count when any do and ``log`` (the main process, once per run)."""
    if not evals:
        return 0
    from conspo.data import check_overlap

    found = check_overlap(train, evals, warn=False)
    if found and log:
        examples = ", ".join(f"{o.eval_id} = {o.train_id}" for o in found[:3])
        logger.warning(
            "%d of %d evaluation problems also appear in the training set (eval id = train id: %s%s); "
            "held-out accuracy on them is not held out - drop them from data.train or data.eval",
            len(found),
            len(evals),
            examples,
            ", ..." if len(found) > 3 else "",
        )
    return len(found)


def build_optimizer(
    model: Any, optim: OptimConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters and the learning-rate schedule of ``optim`` over ``total_steps``
    optimizer steps. Weight decay applies to matrices only (biases and norm weights get none)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": optim.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=optim.lr,
        betas=tuple(optim.betas),
        eps=optim.eps,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(optim, s, total_steps))
    return optimizer, scheduler
