"""The supervised warm start: from a random tiny Llama to a base policy with partial accuracy, cached on disk.

RL from verifiable rewards only learns when a group holds both right and wrong answers. The warm start makes
such a base policy on purpose: it imitates a *teacher* that solves the task but makes a typical slip (a
dropped carry, an off-by-one step) on a fraction ``slip_rate`` of the training examples. Sampling at
temperature 1, the policy then answers correctly about ``(1 - slip_rate) x skill`` of the time, and the correct
answer is always within reach of sampling: the situation of a real base model whose pass@k is well above its
avg@k, which is what RL sharpens.

Everything is deterministic given the configuration (seeded data, initialisation and batch order; a fixed
number of torch threads), and ``ensure_testbed_policy`` caches the result under a hash of the configuration.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from conspo.data.problem import Problem
from conspo.data.templates import render_prompt
from conspo.testbed.config import DEFAULT_TESTBED, TESTBED_FORMAT_VERSION, WarmStartConfig
from conspo.testbed.model import build_tiny_model, count_parameters
from conspo.testbed.tasks import make_task
from conspo.testbed.tokenizer import build_char_tokenizer

__all__ = [
    "DEFAULT_TESTBED",
    "TESTBED_FORMAT_VERSION",
    "WarmStartConfig",
    "default_cache_dir",
    "ensure_testbed_policy",
    "load_testbed_policy",
    "measure_accuracy",
    "read_testbed_info",
    "warm_start",
]

INFO_FILE = "testbed.json"


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, min(n, os.cpu_count() or 1)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _encode_examples(tokenizer, prompts: Sequence[str], completions: Sequence[str]) -> list[tuple[list, int]]:
    """(token ids of prompt + completion + eos, prompt length) per example."""
    out = []
    for prompt, completion in zip(prompts, completions):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        out.append((p + c, len(p)))
    return out


def _collate(examples: Sequence[tuple[list, int]], pad_id: int) -> dict[str, torch.Tensor]:
    # Right padding for training; the loss sees completion tokens (and the eos) only.
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for row, (ids, prompt_len) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, prompt_len : len(ids)] = torch.tensor(ids[prompt_len:])
    return {"input_ids": input_ids, "attention_mask": attention, "labels": labels}


def _lr_factor(step: int, total: int) -> float:
    warmup = max(1, total // 20)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


_BOXED_INT = re.compile(r"\\boxed\{(-?\d+)\}")


def _fallback_correct(completions: Sequence[str], answers: Sequence[str]) -> list[bool]:
    # Integer comparison on the last \boxed{}; used only when conspo.rewards is not importable.
    out = []
    for text, answer in zip(completions, answers):
        found = _BOXED_INT.findall(text)
        out.append(bool(found) and answer.lstrip("-").isdigit() and int(found[-1]) == int(answer))
    return out


def _judge(completions: Sequence[str], answers: Sequence[str]) -> tuple[list[bool], str]:
    try:
        from conspo.rewards import MathVerifier  # the real verifier (process pool, hard timeout)
    except ImportError:
        return _fallback_correct(completions, answers), "integer-fallback"
    with MathVerifier(num_workers=1, timeout=5.0) as verifier:
        verdicts = verifier.verify_batch(list(completions), list(answers))
    return [bool(v.correct) for v in verdicts], "conspo.rewards.MathVerifier"


@torch.no_grad()
def measure_accuracy(
    model,
    tokenizer,
    problems: Sequence[Problem],
    *,
    samples: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 32,
    template: str = "testbed",
    seed: int = 0,
    batch_size: int = 256,
    num_threads: int | None = 1,
) -> dict[str, Any]:
    """Mean accuracy of ``samples`` sampled completions per problem (HF ``generate``, full-vocabulary sampling).

    Returns ``{"accuracy", "pass_at_k", "mixed_groups", "n", "samples", "verifier", "examples"}``:
    ``pass_at_k`` is the share of problems with at least one right sample, ``mixed_groups`` the share whose
    samples hold both right and wrong answers (the groups RL learns from), ``examples`` three prompt /
    completion pairs. Sampling is seeded (``seed``) without disturbing the global torch RNG; it runs with
    ``num_threads`` torch threads (None: leave the setting alone).
    """
    model.eval()
    prompts = [render_prompt(p.problem, tokenizer, template) for p in problems for _ in range(samples)]
    answers = [p.answer for p in problems for _ in range(samples)]
    texts: list[str] = []
    threads = _torch_threads(num_threads) if num_threads else contextlib.nullcontext()
    with threads, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for start in range(0, len(prompts), batch_size):
            enc = tokenizer(
                prompts[start : start + batch_size],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
            )
            out = model.generate(
                **enc,
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
            texts += tokenizer.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    correct, verifier = _judge(texts, answers)
    per_problem = [correct[i * samples : (i + 1) * samples] for i in range(len(problems))]
    return {
        "accuracy": sum(correct) / max(1, len(correct)),
        "pass_at_k": sum(any(g) for g in per_problem) / max(1, len(problems)),
        "mixed_groups": sum(any(g) and not all(g) for g in per_problem) / max(1, len(problems)),
        "n": len(correct),
        "samples": samples,
        "verifier": verifier,
        "examples": [{"prompt": p, "completion": t} for p, t in zip(prompts[:3], texts[:3])],
    }


def warm_start(config: WarmStartConfig, out_dir: str | Path, *, log=None) -> dict[str, Any]:
    """Train the tiny policy with ``config`` and save model, tokenizer and ``testbed.json`` into ``out_dir``."""
    log = log or (lambda msg: None)
    out_dir = Path(out_dir)
    started = time.perf_counter()
    task = make_task(config.task, seed=config.seed, difficulty=config.difficulty)
    tokenizer = build_char_tokenizer()
    problems = task.train_problems(config.num_train_problems)
    rng = random.Random(f"warmstart|{config.seed}")
    prompts = [render_prompt(p.problem, tokenizer, config.template) for p in problems]
    completions = [
        task.teacher_completion(p.problem, slip=rng.random() < config.slip_rate, rng=rng) for p in problems
    ]
    examples = _encode_examples(tokenizer, prompts, completions)

    with _torch_threads(config.num_threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = build_tiny_model(tokenizer, config.model, seed=config.seed)
        model.train()
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, betas=(0.9, 0.98)
        )
        order: list[int] = []
        losses: list[float] = []
        for step in range(config.steps):
            if len(order) < config.batch_size:
                extra = list(range(len(examples)))
                rng.shuffle(extra)
                order += extra
            batch = _collate([examples[i] for i in order[: config.batch_size]], tokenizer.pad_token_id)
            del order[: config.batch_size]
            for group in optimizer.param_groups:
                group["lr"] = config.learning_rate * _lr_factor(step, config.steps)
            loss = model(**batch).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            losses.append(loss.item())
            if (step + 1) % 100 == 0 or step + 1 == config.steps:
                log(
                    f"warm start step {step + 1}/{config.steps}: loss {sum(losses[-50:]) / len(losses[-50:]):.4f}"
                )
        train_seconds = time.perf_counter() - started
        measured = measure_accuracy(
            model,
            tokenizer,
            task.eval_problems(config.eval_problems),
            samples=config.eval_samples,
            template=config.template,
            seed=config.seed,
        )
    log(f"held-out accuracy at temperature 1: {measured['accuracy']:.3f} ({measured['verifier']})")

    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    info = {
        "config": config.to_dict(),
        "cache_key": config.cache_key,
        "format_version": TESTBED_FORMAT_VERSION,
        "parameters": count_parameters(model),
        "train_seconds": round(train_seconds, 2),
        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
        "eval": measured,
        "torch_version": torch.__version__,
    }
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def default_cache_dir() -> Path:
    """``$CONSPO_CACHE/testbed`` if set, else ``~/.cache/conspo/testbed``."""
    root = os.environ.get("CONSPO_CACHE")
    return (Path(root).expanduser() if root else Path.home() / ".cache" / "conspo") / "testbed"


def ensure_testbed_policy(
    cache_dir: str | Path | None = None, *, config: WarmStartConfig | None = None, log=None, **overrides: Any
) -> Path:
    """Path of the warm-started testbed policy, training it first if no cached copy exists.

    The policy lives in ``<cache_dir>/<config hash>`` (``cache_dir`` defaults to ``default_cache_dir()``) and is
    loadable with ``AutoModelForCausalLM`` / ``AutoTokenizer``. It is written to a temporary folder and renamed
    into place, so a crash never leaves a half-written policy and concurrent callers agree on one copy.
    """
    config = dataclasses.replace(config, **overrides) if config else WarmStartConfig(**overrides)
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = root / config.cache_key
    if (target / INFO_FILE).exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    # One builder per configuration: concurrent callers (parallel test sessions, several engineers) wait
    # for it on a lock file instead of all training the same policy.
    with _build_lock(root / f".{config.cache_key}.lock"):
        if (target / INFO_FILE).exists():
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{config.cache_key}-", dir=root))
        if log is not None:
            log(f"building the testbed policy once (about a minute on 2 CPU cores), cached in {target}")
        try:
            warm_start(config, tmp, log=log)
            if target.exists():
                shutil.rmtree(target)  # leftover without testbed.json: an interrupted older layout
            os.replace(tmp, target)  # atomic: readers see no folder or a complete one
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _build_lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename alone keeps the cache consistent
        yield
        return
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_testbed_info(policy_dir: str | Path) -> dict[str, Any]:
    """The ``testbed.json`` written next to a warm-started policy (config, accuracy, timings)."""
    path = Path(policy_dir) / INFO_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a testbed policy info file: {exc}") from None


def load_testbed_policy(policy_dir: str | Path):
    """``(model, tokenizer)`` from a testbed policy folder, through the Auto classes."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(policy_dir), AutoTokenizer.from_pretrained(policy_dir)
