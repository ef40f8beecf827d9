"""What a run needs before its first step: run folder, policy, reference model, problems, template."""

from __future__ import annotations

import copy
import logging
import time
from pathlib import Path
from typing import Any

import torch

from conspo.trainer.config import TESTBED, TrainConfig
from conspo.trainer.distributed import Distributed

__all__ = [
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
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    model.train()
    return model, tokenizer, str(path)


def load_reference(cfg: TrainConfig, policy: Any, device: torch.device) -> Any:
    """A frozen reference policy: ``model.ref_model`` or a copy of the initial policy."""
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


def load_run_problems(cfg: TrainConfig) -> tuple[list[Any], list[Any]]:
    """(training problems, held-out problems) as ``conspo.data.Problem`` lists."""
    d = cfg.data
    eval_n = cfg.eval.max_problems
    evals: list[Any] = []
    if d.train == TESTBED:
        from conspo.testbed import make_task

        task = make_task(d.testbed_task, seed=cfg.seed, difficulty=d.testbed_difficulty)
        train = task.train_problems(d.max_train_problems or 2000)
        if d.eval in (None, TESTBED):
            evals = task.eval_problems(eval_n or 64)
    else:
        from conspo.data import load_problems

        train = load_problems(d.train, split=d.split, data_dir=d.data_dir)
        if d.max_train_problems is not None:
            train = train[: d.max_train_problems]
    if d.eval not in (None, TESTBED):
        from conspo.data import load_problems

        evals = load_problems(d.eval, split=d.eval_split, data_dir=d.data_dir)
    if eval_n is not None:
        evals = evals[:eval_n]
    if not train:
        raise ValueError(f"data.train: {d.train!r} holds no problems")
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
