"""``conspo compare``: several objectives x several seeds on the CPU testbed, one table and a few plots.

One file over 450 lines: the command's arguments, its grid, its resume manifest and its report are one
flow a reader follows top to bottom; the pieces with logic of their own live beside it (runner, specs,
summary, paired, plots).

conspo compare --objectives grpo,dapo,dr_grpo,conspo --seeds 8      # each against grpo, seed by seed
conspo compare --objectives grpo,conspo --baseline conspo --task varchain --seeds 8
conspo compare --ablations --seeds 3 --steps 60                    # the paper's Table 6 set (baseline conspo)
conspo compare --objectives "grpo;conspo:tau=5,margin=none" --out runs/cmp --jobs 2
conspo compare --out runs/cmp --report-only                        # re-plot what is there

Each (objective, seed) is one ``conspo train`` run: the same warm-started policy, the same prompts for a
given seed, the same budget; nothing is tuned per objective (hyperparameters only if you write them in the
spec). Runs go in parallel processes; each finished run saves ``result.json`` next to its metrics, so an
interrupted compare started again with the same ``--out`` only redoes what is missing.

Because a seed's runs share the start, the prompts and the evaluation draws, every objective is compared to
the baseline (``--baseline``, default the first objective) seed by seed: the mean paired difference in final
held-out accuracy and in AUC, a 95% t interval (and a paired bootstrap one), wins, a verdict and the
smallest difference this many seeds can detect (``conspo.compare.paired``).

Outputs in ``--out``: ``report.md`` / ``report.json`` (the paired comparison and the evaluation noise),
``compare.md`` (the per-objective table, then the paired one), ``summary.json``, ``paired.png``,
``accuracy.png``, ``reward.png``, ``score_gap.png``, ``p_pos.png``, ``margin.png``.

Objective lists: separate specs by spaces or ';', repeat ``--objective SPEC``, or use commas: a comma
segment with '=' and no ':' belongs to the objective before it, so
``conspo,conspo:credit=linear,score=clipped_ratio`` is two objectives, the second with two settings.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from conspo.compare.specs import ABLATIONS, parse_objective_list, parse_seeds


def _accuracy(text: str) -> float:
    """--target: an accuracy in [0, 1] (NaN would silently leave every 'steps to target' empty)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"expected a finite accuracy in [0, 1], got {text!r}")
    return value


__all__ = ["add_arguments", "build_runs", "run"]

MANIFEST = "compare.json"
# Held-out evaluation of a compare on the testbed unless told otherwise: 256 problems x 2 samples = 512 draws
# (binomial sd <= 0.022 per accuracy, vs 0.031 for the trainer's 64 x 4); on varchain one costs about three
# training steps of 8 prompts x 8 (benchmarks/RESULTS.md).
EVAL_PROBLEMS = 256
EVAL_SAMPLES = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument(
        "--objectives",
        nargs="+",
        default=[],
        metavar="SPECS",
        help="objective specs: 'grpo,conspo', 'grpo;conspo:tau=5', or several arguments",
    )
    parser.add_argument(
        "--objective",
        action="append",
        default=[],
        metavar="SPEC",
        help="one objective spec, taken whole (repeatable)",
    )
    parser.add_argument(
        "--ablations", action="store_true", help="add the paper's Table 6 set: " + ", ".join(ABLATIONS)
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="SPEC",
        help="objective every other one is compared to seed by seed (default: the first objective)",
    )
    parser.add_argument(
        "--seeds", default="3", help="a count (5 = seeds 0-4), a list (0,3,7) or a range (2-4)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="RL steps per run (default: the config's steps)"
    )
    parser.add_argument(
        "--task", default=None, help="testbed task: add, mul, chain or varchain (default: the config's)"
    )
    parser.add_argument("--difficulty", type=int, default=None, help="testbed task difficulty")
    parser.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="held-out evaluation every N steps (default: steps/10, at least 1)",
    )
    parser.add_argument(
        "--eval-problems",
        type=int,
        default=None,
        metavar="N",
        help=f"held-out problems per evaluation (default: {EVAL_PROBLEMS} on the testbed, or all its task has; "
        "else the config's eval.max_problems)",
    )
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        metavar="K",
        help=f"samples per held-out problem (default: {EVAL_SAMPLES} on the testbed; else the config's eval.samples)",
    )
    parser.add_argument(
        "--target",
        type=_accuracy,
        default=None,
        help="held-out accuracy for 'steps to target' (default: halfway from the initial accuracy to the best "
        "objective's final accuracy)",
    )
    parser.add_argument("--out", default=None, help="output folder (default: runs/compare-<timestamp>)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs at once (default: the number of cores, capped by the runs)",
    )
    parser.add_argument(
        "--config", "-c", default=None, metavar="FILE.yaml", help="base training config (YAML)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a training config field for every run, e.g. --set batch.group_size=4 (repeatable)",
    )
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing; rebuild the table and plots from --out"
    )


def _base_config(args: argparse.Namespace) -> Any:
    """The settings every run shares, from --config, --set and the shortcut flags."""
    from conspo.config import load_config
    from conspo.trainer.config import TrainConfig

    overrides = list(args.set)
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    if args.task is not None:
        overrides.append(f"data.testbed_task={args.task}")
    if args.difficulty is not None:
        overrides.append(f"data.testbed_difficulty={args.difficulty}")
    if args.eval_problems is not None:
        overrides.append(f"eval.max_problems={args.eval_problems}")
    if args.eval_samples is not None:
        overrides.append(f"eval.samples={args.eval_samples}")
    cfg = load_config(TrainConfig, args.config, overrides)
    _testbed_eval_defaults(cfg, args)
    every = args.eval_every
    if every is None and not any(o.startswith("eval.every=") for o in args.set):
        every = max(1, cfg.steps // 10)
    if every is not None:
        cfg.eval.every = every
    cfg.eval.at_start = True  # the curve starts at the shared initial policy
    # A compare keeps metrics, not models: no checkpoints, no TensorBoard, no live bars from N processes.
    cfg.logging.progress = False
    cfg.logging.tensorboard = False
    cfg.logging.wandb = False
    cfg.checkpoint.every = 0
    cfg.checkpoint.every_minutes = None
    cfg.checkpoint.save_best = False
    cfg.checkpoint.save_final = False
    cfg.reward.num_workers = 1
    return cfg


def _given(args: argparse.Namespace, key: str) -> bool:
    return any(o.split("=", 1)[0].strip() == key for o in args.set)


def _testbed_eval_defaults(cfg: Any, args: argparse.Namespace) -> None:
    """More held-out problems and draws than a single ``conspo train`` uses, on the testbed's own held-out split,
    where neither a flag, a ``--set`` nor a ``--config`` file chose them (a small task gets all it has)."""
    from conspo.trainer.config import TESTBED

    if args.config is not None or cfg.data.train != TESTBED or cfg.data.eval not in (None, TESTBED):
        return
    if args.eval_problems is None and not _given(args, "eval.max_problems"):
        from conspo.testbed import make_task

        task = make_task(cfg.data.testbed_task, seed=cfg.seed, difficulty=cfg.data.testbed_difficulty)
        cfg.eval.max_problems = len(task.eval_problems(EVAL_PROBLEMS, at_most=True))
    if args.eval_samples is None and not _given(args, "eval.samples"):
        cfg.eval.samples = EVAL_SAMPLES


def build_runs(base: Any, objectives: list[str], seeds: list[int], out: Path, jobs: int) -> list[Any]:
    """The grid as RunSpecs (objective-major, so the first results cover every objective's first seeds)."""
    import dataclasses

    from conspo.compare.runner import RunSpec, run_dir_for
    from conspo.config import config_to_dict
    from conspo.objectives import parse_objective_spec

    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
    runs = []
    for seed in seeds:
        for spec in objectives:
            name, params = parse_objective_spec(spec) if ":" in spec else (spec, {})
            cfg = dataclasses.replace(base, seed=seed)
            cfg.objective = dataclasses.replace(base.objective, name=name, params=dict(params))
            cfg.num_threads = threads
            cfg.validate()  # a bad combination fails here, before anything trains
            runs.append(RunSpec(spec, seed, str(run_dir_for(out, spec, seed)), config_to_dict(cfg), threads))
    return runs


def _baseline(given: str | None, objectives: list[str]) -> str:
    """The ``--baseline`` spec (one of the objectives, compared as written) or the first objective."""
    if given is None:
        return objectives[0]
    spec = given.strip()
    if spec not in objectives:
        raise ValueError(f"--baseline {given!r} is not one of the objectives: {', '.join(objectives)}")
    return spec


def _check_manifest(out: Path, manifest: dict[str, Any]) -> None:
    path = out / MANIFEST
    if path.is_file():
        old = json.loads(path.read_text())
        if old.get("config") != manifest["config"]:
            raise ValueError(
                f"{out} holds a compare with different training settings; use another --out "
                "(or --report-only to re-plot it)"
            )
        manifest["objectives"] = list(dict.fromkeys(old.get("objectives", []) + manifest["objectives"]))
        manifest["seeds"] = sorted(set(old.get("seeds", [])) | set(manifest["seeds"]))
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(manifest, indent=2) + "\n")


def _load_runs(out: Path, objectives: list[str], seeds: list[int]) -> tuple[dict, dict, list]:
    from conspo.compare.runner import read_result, run_dir_for
    from conspo.trainer.logging import read_metrics

    runs: dict[str, dict[int, list]] = {}
    failed: dict[str, int] = {}
    errors = []
    for spec in objectives:
        for seed in seeds:
            run_dir = run_dir_for(out, spec, seed)
            result = read_result(run_dir)
            if result is None:
                continue
            if result.status != "ok":
                failed[spec] = failed.get(spec, 0) + 1
                errors.append(result)
                continue
            runs.setdefault(spec, {})[seed] = read_metrics(run_dir / "metrics.jsonl")
    return runs, failed, errors


def _noise(summaries: list[Any], diffs: list[Any], eval_draws: int | None) -> dict[str, Any]:
    """Evaluation noise next to the training differences (what ``report.md`` says about the budget).

    ``eval_sd``: the binomial bound sqrt(a (1 - a) / (problems x samples)) on the sampling noise of one
    held-out accuracy ``a`` (the within-problem variance is at most the binomial one), averaged over the
    final accuracies; ``eval_diff_sd``: the same for a difference of two independent evaluations (sqrt(2)
    times; the shared draws of a seed make the real one smaller). ``initial_sd``: the spread of the initial
    accuracy over seeds (other problems and draws per seed: what an unpaired comparison carries).
    ``paired_sd``: the median over objectives of the paired spread of the final-accuracy differences
    (training differences plus what is left of the evaluation noise).
    """
    finals = [m["final"] for s in summaries for m in s.per_seed.values() if m.get("final") is not None]
    initials = [
        m["initial"] for s in summaries[:1] for m in s.per_seed.values() if m.get("initial") is not None
    ]
    out: dict[str, Any] = {"eval_draws": eval_draws}
    if eval_draws and finals:
        sd = sum(math.sqrt(a * (1 - a) / eval_draws) for a in finals) / len(finals)
        out["eval_sd"], out["eval_diff_sd"] = sd, sd * math.sqrt(2)
    if len(initials) > 1:
        mean = sum(initials) / len(initials)
        out["initial_sd"] = math.sqrt(sum((x - mean) ** 2 for x in initials) / (len(initials) - 1))
    spreads = sorted(d.sd for d in diffs if d.metric == "final" and d.sd is not None)
    if spreads:
        out["paired_sd"] = spreads[len(spreads) // 2]
    return out


def _noise_lines(noise: dict[str, Any]) -> list[str]:
    def f(key: str) -> str:
        return "-" if noise.get(key) is None else f"{noise[key]:.3f}"

    return [
        f"- evaluation sampling noise of one held-out accuracy ({noise.get('eval_draws') or '-'} samples, "
        f"binomial bound): sd {f('eval_sd')}; of a difference of two independent evaluations: {f('eval_diff_sd')}",
        f"- initial accuracy over seeds (other problems and draws per seed): sd {f('initial_sd')}",
        f"- paired spread of the final-accuracy differences (median over objectives): sd {f('paired_sd')}",
    ]


def report(
    out: Path,
    objectives: list[str],
    seeds: list[int],
    target: float | None,
    console: Any,
    baseline: str | None = None,
) -> int:
    """Write report.md, report.json, compare.md, summary.json and the PNGs from what ``out`` holds."""
    from conspo.compare.paired import markdown_paired, paired_table, plot_paired, rich_paired
    from conspo.compare.summary import default_target, markdown_table, plot_all, rich_table, summarize

    runs, failed, errors = _load_runs(out, objectives, seeds)
    if not runs and not failed:
        console.print(f"conspo compare: no finished run under {out}")
        return 1
    target = target if target is not None else default_target(runs)
    summaries = summarize(runs, failed, target)
    pngs = plot_all(runs, out)
    manifest = json.loads((out / MANIFEST).read_text()) if (out / MANIFEST).is_file() else {}
    settings = manifest.get("settings", "")
    baseline = baseline or objectives[0]
    per_seed = {s.objective: s.per_seed for s in summaries if s.per_seed}
    diffs = paired_table(per_seed, baseline) if baseline in per_seed else []
    paired_png = plot_paired(diffs, out / "paired.png")
    ev = manifest.get("config", {}).get("eval", {})
    draws = (ev.get("max_problems") or 0) * (ev.get("samples") or 0) or None
    noise = _noise(summaries, diffs, draws)
    target_text = "-" if target is None else f"{target:.3f}"
    if diffs:
        paired_md = [
            f"## Paired differences to `{baseline}`",
            "",
            "Per seed, objective minus baseline (same start, prompts and evaluation draws); mean over the seeds "
            "both finished, 95% t interval (the verdict) and 95% paired bootstrap interval; wins/ties/losses "
            "over seeds; 'detectable' = the smallest true difference this many seeds detect with 80% power at "
            "the observed paired spread; 'seeds needed' = seeds that would detect the observed mean difference.",
            "",
            markdown_paired(diffs),
            "",
            *([f"![paired differences]({paired_png.name})", ""] if paired_png else []),
            "Evaluation noise and training differences:",
            "",
            *_noise_lines(noise),
        ]
    else:
        paired_md = [f"No paired comparison: baseline `{baseline}` has no finished run."]
    md = [
        "# conspo compare",
        "",
        f"{settings}  ",
        f"Mean ± sample std over seeds. Target accuracy for 'steps to target': {target_text}. "
        "AUC = area under the held-out accuracy curve / step span. Reported as measured, nothing tuned.",
        "",
        markdown_table(summaries),
        "",
        *paired_md,
        "",
        *(f"![{name}]({p.name})" for name, p in pngs.items()),
    ]
    if errors:
        md += ["", "## Failed runs", ""]
        md += [f"- `{e.objective}` seed {e.seed}: {e.error.splitlines()[0]}" for e in errors]
    (out / "compare.md").write_text("\n".join(md) + "\n")
    (out / "report.md").write_text(
        "\n".join(["# conspo compare: paired report", "", f"{settings}  ", "", *paired_md]) + "\n"
    )
    rows = [
        {k: v for k, v in vars(s).items() if k != "per_seed"} | {"per_seed": s.per_seed} for s in summaries
    ]
    paired_json = [d.to_dict() for d in diffs]
    (out / "summary.json").write_text(
        json.dumps(
            {"target": target, "objectives": rows, "baseline": baseline, "paired": paired_json}, indent=2
        )
        + "\n"
    )
    (out / "report.json").write_text(
        json.dumps(
            {
                "settings": settings,
                "baseline": baseline,
                "paired": paired_json,
                "noise": noise,
                "target": target,
            },
            indent=2,
        )
        + "\n"
    )
    console.print(rich_table(summaries, f"conspo compare ({target_text} target)"))
    if diffs:
        console.print(rich_paired(diffs, f"paired differences to {baseline} (95% t interval)"))
        for line in _noise_lines(noise):
            console.print(line[2:])
    for e in errors:
        console.print(f"[red]failed[/red] {e.objective} seed {e.seed}: {e.error.splitlines()[0]}")
    plots = [p.name for p in pngs.values()] + ([paired_png.name] if paired_png else [])
    console.print(
        f"report: {out / 'report.md'}; table: {out / 'compare.md'}; plots: {', '.join(plots) or 'none'}"
    )
    return 0 if not errors else 1


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from conspo.config import ConfigError

    # Not a terminal (a log file): wide enough that the table does not wrap its numbers.
    console = Console(width=None if sys.stdout.isatty() else 180)
    try:
        seeds = parse_seeds(args.seeds)
        given = args.objectives or args.objective
        objectives = parse_objective_list(args.objectives, args.objective) if given else []
        if args.ablations:  # the Table 6 set, after what was asked for, without repeating it
            objectives += [spec for spec in ABLATIONS if spec not in objectives]
        out = Path(args.out) if args.out else Path("runs") / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"
        if args.report_only:
            if not (out / MANIFEST).is_file():
                raise ValueError(f"--report-only: {out / MANIFEST} not found")
            manifest = json.loads((out / MANIFEST).read_text())
            objectives = objectives or manifest["objectives"]
            baseline = _baseline(args.baseline, objectives)
            return report(out, objectives, manifest["seeds"], args.target, console, baseline)
        if not objectives:
            raise ValueError("no objective given; e.g. --objectives grpo,conspo or --ablations")
        baseline = _baseline(args.baseline, objectives)
        base = _base_config(args)
        jobs = args.jobs or min(os.cpu_count() or 1, len(objectives) * len(seeds))
        if jobs < 1:
            raise ValueError(f"--jobs must be >= 1; got {jobs}")
        specs = build_runs(base, objectives, seeds, out, jobs)
    except (ValueError, ConfigError) as e:
        print(f"conspo compare: {e}", file=sys.stderr)
        return 2
    from conspo.config import config_to_dict

    shared = config_to_dict(base)
    shared.pop("objective", None)
    shared.pop("seed", None)
    settings = (
        f"{len(objectives)} objectives x {len(seeds)} seeds on `{base.model.name_or_path}` / "
        f"`{base.data.train}`"
        + (f" task `{base.data.testbed_task}`" if base.data.train == "testbed" else "")
        + f", {base.steps} steps of {base.batch.prompts_per_step} prompts x G={base.batch.group_size}, "
        f"held-out avg@{base.eval.samples} on {base.eval.max_problems} problems every {base.eval.every} steps"
    )
    from conspo.trainer.run_folder import RunFolderBusy, RunFolderLock

    lock = RunFolderLock(out)  # one compare per output folder (each also clears the other's partial runs)
    try:
        lock.acquire()
        _check_manifest(
            out, {"objectives": objectives, "seeds": seeds, "config": shared, "settings": settings}
        )
    except (ValueError, RunFolderBusy) as e:
        lock.release()
        print(f"conspo compare: {e}", file=sys.stderr)
        return 2
    if base.model.name_or_path == "testbed":
        # Build the shared warm-started policy once, before N processes ask for it.
        from conspo.testbed import ensure_testbed_policy

        kwargs = {"task": base.data.testbed_task}
        if base.data.testbed_difficulty is not None:
            kwargs["difficulty"] = base.data.testbed_difficulty
        console.print("preparing the warm-started testbed policy ...")
        ensure_testbed_policy(**kwargs)
    console.print(f"{len(specs)} runs, {jobs} at a time -> {out}")
    from conspo.compare.runner import execute_runs

    def on_done(result: Any, cached: bool) -> None:
        if cached:
            console.print(f"  done before: {result.objective} seed {result.seed}")
        elif result.status == "ok":
            acc = result.summary.get("eval_after")
            acc_text = "-" if acc is None else f"{acc:.3f}"
            console.print(
                f"  finished {result.objective} seed {result.seed} in {result.seconds:.0f}s (held-out {acc_text})"
            )
        else:
            console.print(
                f"  [red]FAILED[/red] {result.objective} seed {result.seed}: {result.error.splitlines()[0]}"
            )

    try:
        execute_runs(specs, jobs, on_done=on_done)
        return report(out, objectives, seeds, args.target, console, baseline)
    finally:
        lock.release()
