"""``conspo eval``: benchmark evaluation as the paper reports it (avg@k, pass@k, maj@k).

    conspo eval --model PATH_OR_HUB_ID [--model B ...] --preset paper
    conspo eval --model runs/conspo --benchmarks aime24,math500 --n 32 --temperature 0.6 --top-p 0.95

Everything is validated (benchmark names and files, models, k <= n) before any generation. Samples are
cached under ``--cache-dir`` as they are generated; rerunning after an interruption generates only the
missing ones. Writes ``report.md``, ``report.json`` and ``samples.jsonl`` under ``--output-dir``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["EvalPlan", "add_arguments", "plan_from_args", "run"]


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"every k must be >= 1, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from conspo.eval.presets import PRESETS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__.replace("``", "`")
    g = parser.add_argument_group("what to evaluate")
    g.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="PATH_OR_HUB_ID",
        help="a model folder, a hub id, or a training run folder (its checkpoint-*/final subfolders); repeat for "
        "several models side by side",
    )
    g.add_argument("--tokenizer", default=None, help="tokenizer path/id (default: found next to the model)")
    g.add_argument(
        "--preset",
        default="paper",
        choices=sorted(PRESETS),
        help="protocol: "
        + "; ".join(f"{p.name} = {p.description}" for p in PRESETS.values())
        + " (default: paper)",
    )
    g.add_argument(
        "--benchmarks",
        default=None,
        help="comma-separated registry names (aime24, math500, ...) or paths to JSONL files "
        "(default: the preset's)",
    )
    g.add_argument(
        "--data-dir", default=None, help="folder with the benchmark files (default: $CONSPO_DATA_DIR)"
    )
    g.add_argument(
        "--limit", type=int, default=None, help="evaluate only the first N problems of each benchmark"
    )
    g.add_argument(
        "--template",
        default=None,
        help="prompt template name or file (default: the template the model was trained with when its folder "
        "says so - 'testbed' for the testbed policy and runs trained on it - else 'default')",
    )
    m = parser.add_argument_group("sampling and metrics")
    m.add_argument(
        "--n", type=int, default=None, help="samples per problem (default: the preset's per benchmark)"
    )
    m.add_argument("--pass-k", type=_int_list, default=[1], help="pass@k values, e.g. 1,8,32 (default: 1)")
    m.add_argument("--maj-k", type=_int_list, default=[], help="maj@k values, e.g. 32 (default: none)")
    m.add_argument("--greedy", action="store_true", help="also report greedy-decoding accuracy")
    m.add_argument("--temperature", type=float, default=None, help="sampling temperature (paper preset: 0.6)")
    m.add_argument("--top-p", type=float, default=None, help="nucleus mass (paper preset: 0.95)")
    m.add_argument("--max-new-tokens", type=int, default=None, help="completion budget (paper preset: 8192)")
    m.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    r = parser.add_argument_group("running")
    r.add_argument("--batch-size", type=int, default=32, help="completions per generate call (default: 32)")
    r.add_argument(
        "--backend",
        choices=["hf", "kv_cache", "vllm"],
        default="hf",
        help="generation backend: hf (model.generate), kv_cache (a bare KV-cache loop) or vllm (the trainer's "
        "colocated vLLM engine; needs the [vllm] extra) (default: hf)",
    )
    r.add_argument("--device", default="auto", help="cuda, cpu, cuda:1 ... (default: auto)")
    r.add_argument(
        "--dtype", default="auto", help="float32, bfloat16 ... (default: bf16 on CUDA, fp32 on CPU)"
    )
    r.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub")
    r.add_argument(
        "--verifier-workers", type=int, default=None, help="verifier processes (default: min(4, cores))"
    )
    r.add_argument(
        "--verifier-timeout", type=float, default=5.0, help="seconds per answer check (default: 5)"
    )
    r.add_argument("--output-dir", default="conspo-eval", help="where reports go (default: ./conspo-eval)")
    r.add_argument("--cache-dir", default=None, help="sample cache (default: OUTPUT_DIR/cache)")
    r.add_argument("--no-cache", action="store_true", help="do not read or write the sample cache")
    r.add_argument("--quiet", action="store_true", help="no progress bar")


@dataclass
class EvalPlan:
    """Everything ``conspo eval`` will do, resolved and validated before any generation."""

    models: list[Any]  # ModelSpec
    benchmarks: dict[str, list[Any]]  # name -> problems
    specs: dict[str, Any]  # name -> BenchmarkSpec (n, label)
    params: Any  # SamplingParams
    ks: list[int]
    maj_ks: list[int]
    greedy: bool
    template: str | None  # None: per model, the template its folder names (default_template)
    # (model label, benchmark) -> max_new_tokens capped to fit the model's context (see context_budgets)
    capped: dict[tuple[str, str], int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def params_for(self, model_label: str, benchmark: str) -> Any:
        """The sampling parameters of one model on one benchmark (max_new_tokens capped to its context)."""
        cap = self.capped.get((model_label, benchmark))
        return self.params if cap is None else dataclasses.replace(self.params, max_new_tokens=cap)

    def config(self) -> dict[str, Any]:
        capped: dict[str, dict[str, int]] = {}
        for (label, bench), cap in self.capped.items():
            capped.setdefault(label, {})[bench] = cap
        return {
            "benchmarks": {name: {"n": s.n, "label": s.metric_label} for name, s in self.specs.items()},
            "problems": {name: len(p) for name, p in self.benchmarks.items()},
            "sampling": self.params.to_dict(),
            "pass_k": self.ks,
            "maj_k": self.maj_ks,
            "greedy": self.greedy,
            "template": self.template or "auto (per model)",
            **({"max_new_tokens_capped": capped} if capped else {}),
        }


def _load_benchmark(name: str, data_dir: str | None, limit: int | None) -> list[Any]:
    from conspo.data import load_problems

    try:
        problems = load_problems(name, data_dir=data_dir, limit=limit)
    except (OSError, ValueError) as exc:
        message = f"benchmark {name!r}: {exc}"
        if "exist" in str(exc) or "local file" in str(exc) or isinstance(exc, OSError):
            where = data_dir or os.environ.get("CONSPO_DATA_DIR") or "(no --data-dir, CONSPO_DATA_DIR unset)"
            message += (
                f". Looked in {where}; point --data-dir (or CONSPO_DATA_DIR) at the folder holding the "
                "benchmark JSONL files, or pass a file path as the benchmark"
            )
        raise ValueError(message) from None
    if not problems:
        raise ValueError(f"benchmark {name!r} has no problems")
    return problems


def _label_of(name: str) -> str:
    # A file given as a benchmark is reported under its stem ("my_set" for /tmp/my_set.jsonl).
    path = Path(name)
    return path.stem if path.suffix else name


def plan_from_args(args: argparse.Namespace) -> EvalPlan:
    """Resolve the preset and overrides, load every benchmark and check every model; no generation."""
    from conspo.eval.models import check_model_loads, expand_models
    from conspo.eval.presets import BenchmarkSpec, get_preset
    from conspo.rollout import SamplingParams

    preset = get_preset(args.preset)
    names = [b.strip() for b in args.benchmarks.split(",") if b.strip()] if args.benchmarks else None
    names = names or [s.name for s in preset.benchmarks]
    limit = args.limit if args.limit is not None else preset.limit
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1, got {limit}")
    if args.n is not None and args.n < 1:
        raise ValueError(f"--n must be >= 1, got {args.n}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    # Before any model is checked or loaded (NaN passes "<= 0" and would switch the hard timeout off).
    if not math.isfinite(args.verifier_timeout) or args.verifier_timeout <= 0:
        raise ValueError(
            f"--verifier-timeout must be a finite number > 0 of seconds, got {args.verifier_timeout}"
        )
    if args.verifier_workers is not None and args.verifier_workers < 1:
        raise ValueError(f"--verifier-workers must be >= 1, got {args.verifier_workers}")
    for flag, value in (("--temperature", args.temperature), ("--top-p", args.top_p)):
        if value is not None and not math.isfinite(value):
            raise ValueError(f"{flag} must be a finite number, got {value}")
    params = SamplingParams(
        temperature=preset.temperature if args.temperature is None else args.temperature,
        top_p=preset.top_p if args.top_p is None else args.top_p,
        max_new_tokens=preset.max_new_tokens if args.max_new_tokens is None else args.max_new_tokens,
        seed=args.seed,
    )
    benchmarks: dict[str, list[Any]] = {}
    specs: dict[str, BenchmarkSpec] = {}
    for name in names:
        label = _label_of(name)
        if label in benchmarks:
            raise ValueError(f"benchmark {label!r} is listed twice")
        spec = preset.spec(label)
        if args.n is not None:
            spec = BenchmarkSpec(label, args.n, spec.label if args.n == spec.n else "")
        for k in [*args.pass_k, *args.maj_k]:
            if k > spec.n:
                raise ValueError(
                    f"k={k} is larger than n={spec.n} samples on {label}: raise --n to at least {k} or drop that k"
                )
        benchmarks[label] = _load_benchmark(name, args.data_dir, limit)
        specs[label] = spec
    models = expand_models(args.model, args.tokenizer)
    plan = EvalPlan(models, benchmarks, specs, params, args.pass_k, args.maj_k, args.greedy, args.template)
    for spec in models:
        config, tokenizer = check_model_loads(spec, args.trust_remote_code)
        context_budgets(plan, spec, config, tokenizer)
    return plan


def context_budgets(plan: EvalPlan, spec: Any, config: Any, tokenizer: Any) -> None:
    """Fit each benchmark's prompts plus ``--max-new-tokens`` into the model's context, before any generation.

    A model asked for more positions than it was built for generates on (slowly, into garbage) until the
    budget runs out. Where the longest prompt of a benchmark plus the budget does not fit, the budget of that
    model on that benchmark is capped to what does (with a warning); a prompt that alone does not fit is an
    error. Unknown context length (no ``max_position_embeddings`` in the config): nothing is checked.
    """
    from conspo.data import render_prompt
    from conspo.eval.models import context_length, default_template, prompt_token_counts

    context = context_length(config)
    if context is None:
        plan.warnings.append(
            f"{spec.label}: context length unknown (no max_position_embeddings in its config); "
            "--max-new-tokens not checked against it"
        )
        return
    template = plan.template or default_template(spec.path)
    wanted = plan.params.max_new_tokens
    for name, problems in plan.benchmarks.items():
        counts = prompt_token_counts(
            tokenizer, [render_prompt(p.problem, tokenizer, template) for p in problems]
        )
        longest = max(counts)
        too_long = sum(c >= context for c in counts)
        if too_long:
            worst = problems[counts.index(longest)]
            raise ValueError(
                f"benchmark {name!r}: {too_long} of {len(counts)} prompts do not fit in the context of model "
                f"{spec.label!r} ({context} tokens, max_position_embeddings) on their own (longest: {longest} "
                f"tokens, problem {worst.id!r}, template {template!r}); use a model with a longer context, "
                "or a benchmark (or --limit) whose prompts fit"
            )
        if longest + wanted > context:
            plan.capped[(spec.label, name)] = context - longest
            plan.warnings.append(
                f"{spec.label} {name}: the longest prompt ({longest} tokens) + --max-new-tokens {wanted} exceeds "
                f"the model's context of {context} tokens; completions capped at {context - longest} new tokens "
                "on this benchmark (pass a smaller --max-new-tokens to choose)"
            )


def _progress_bar(quiet: bool):
    if quiet:
        return None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("completions"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=False,
    )


def _progress_callback(progress: Any, description: str) -> Callable[[int, int], None] | None:
    if progress is None:
        return None
    task = progress.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        if total == 0:  # everything came from the cache
            progress.update(task, completed=1, total=1)
        else:
            progress.update(task, completed=done, total=total)

    return update


def execute(plan: EvalPlan, args: argparse.Namespace, verifier: Any, log: Callable[[str], None]) -> list[Any]:
    """Evaluate every model on every benchmark; returns :class:`~conspo.eval.report.ModelReport` s."""
    from conspo.eval.cache import SampleCache, model_fingerprint
    from conspo.eval.models import default_template, load_model
    from conspo.eval.report import ModelReport
    from conspo.eval.runner import evaluate_problems
    from conspo.rollout import make_generator

    cache_dir = Path(args.cache_dir or Path(args.output_dir) / "cache")
    reports = []
    for spec in plan.models:
        fingerprint = model_fingerprint(spec.path)
        started = time.perf_counter()
        model, tokenizer = load_model(spec, args.device, args.dtype, args.trust_remote_code)
        log(f"[eval] {spec.label}: loaded {spec.path} in {time.perf_counter() - started:.1f}s")
        generator = make_generator(model, tokenizer, backend=args.backend, batch_size=args.batch_size)
        template = plan.template or default_template(spec.path)
        cache = None if args.no_cache else SampleCache(cache_dir / f"{fingerprint}.jsonl", fingerprint)
        report = ModelReport(spec.label, spec.path, fingerprint)
        progress = _progress_bar(args.quiet)
        with progress if progress is not None else contextlib.nullcontext():
            for name, problems in plan.benchmarks.items():
                bench = plan.specs[name]
                result = evaluate_problems(
                    generator,
                    problems,
                    verifier,
                    n=bench.n,
                    params=plan.params_for(spec.label, name),
                    ks=plan.ks,
                    maj_ks=plan.maj_ks,
                    greedy=plan.greedy,
                    template=template,
                    tokenizer=tokenizer,
                    cache=cache,
                    benchmark=name,
                    progress=_progress_callback(progress, f"{spec.label} {name}"),
                )
                result.label = bench.metric_label
                report.results[name] = result
                log(
                    f"[eval] {spec.label} {name}: {result.headline_label} = {100 * result.score:.1f} "
                    f"({result.num_generated} generated, {result.num_cached} cached)"
                )
        reports.append(report)
        engine = getattr(generator, "engine", None)  # vllm: shut this model's engine down
        if engine is not None:
            engine.close()
        del model, generator  # free the weights before the next model loads
    return reports


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from conspo.eval.report import extra_metrics, render_table, write_reports
    from conspo.rewards import MathVerifier

    console = Console(stderr=False)

    def log(text: str) -> None:
        console.print(text, markup=False, highlight=False)  # "[eval]" is a prefix, not rich markup

    try:
        plan = plan_from_args(args)
    except ValueError as exc:
        print(f"conspo eval: {exc}", file=sys.stderr)
        return 2
    total = sum(len(p) * plan.specs[b].n for b, p in plan.benchmarks.items()) * len(plan.models)
    log(
        f"[eval] {len(plan.models)} model(s) x {len(plan.benchmarks)} benchmark(s): {total} completions "
        f"(temperature {plan.params.temperature}, top-p {plan.params.top_p}, max {plan.params.max_new_tokens} tokens)"
    )
    for warning in plan.warnings:
        log(f"[eval] warning: {warning}")
    try:
        with MathVerifier(num_workers=args.verifier_workers, timeout=args.verifier_timeout) as verifier:
            reports = execute(plan, args, verifier, log)
    except ValueError as exc:
        print(f"conspo eval: {exc}", file=sys.stderr)
        return 2
    paths = write_reports(reports, args.output_dir, plan.config())
    console.print(render_table(reports, title="Accuracy (%)"))
    for metric in extra_metrics(reports):
        console.print(render_table(reports, metric, title=f"{metric} (%)"))
    log(f"[eval] wrote {paths['markdown']}, {paths['json']}, {paths['samples']}")
    return 0
