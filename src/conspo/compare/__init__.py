"""``conspo compare``: several objectives x several seeds on the CPU testbed, one table and a few plots.

conspo compare --objectives grpo,dapo,dr_grpo,conspo --seeds 5
conspo compare --ablations --seeds 3 --steps 60                    # the paper's Table 6 set
conspo compare --objectives "grpo;conspo:tau=5,margin=none" --out runs/cmp --jobs 2
conspo compare --out runs/cmp --report-only                        # re-plot what is there

Each (objective, seed) is one ``conspo train`` run: the same warm-started policy, the same prompts for a
given seed, the same budget; nothing is tuned per objective (hyperparameters only if you write them in the
spec). Runs go in parallel processes; each finished run saves ``result.json`` next to its metrics, so an
interrupted compare started again with the same ``--out`` only redoes what is missing. Outputs in ``--out``:
``compare.md`` (the table), ``summary.json``, ``accuracy.png``, ``reward.png``, ``score_gap.png``,
``p_pos.png``, ``margin.png``.

Objective lists: separate specs by spaces or ';', repeat ``--objective SPEC``, or use commas: a comma
segment with '=' and no ':' belongs to the objective before it, so
``conspo,conspo:credit=linear,score=clipped_ratio`` is two objectives, the second with two settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from conspo.compare.specs import ABLATIONS, parse_objective_list, parse_seeds

__all__ = ["add_arguments", "build_runs", "run"]

MANIFEST = "compare.json"


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
        "--seeds", default="3", help="a count (5 = seeds 0-4), a list (0,3,7) or a range (2-4)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="RL steps per run (default: the config's steps)"
    )
    parser.add_argument(
        "--task", default=None, help="testbed task: add, mul or chain (default: the config's)"
    )
    parser.add_argument("--difficulty", type=int, default=None, help="testbed task difficulty")
    parser.add_argument(
        "--eval-every",
        type=int,
        default=None,
        help="held-out evaluation every N steps (default: steps/10, at least 1)",
    )
    parser.add_argument(
        "--target",
        type=float,
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
    cfg = load_config(TrainConfig, args.config, overrides)
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


def report(out: Path, objectives: list[str], seeds: list[int], target: float | None, console: Any) -> int:
    """Write compare.md, summary.json and the PNGs from what ``out`` holds; print the table."""
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
    target_text = "-" if target is None else f"{target:.3f}"
    md = [
        "# conspo compare",
        "",
        f"{settings}  ",
        f"Mean ± sample std over seeds. Target accuracy for 'steps to target': {target_text}. "
        "AUC = area under the held-out accuracy curve / step span. Reported as measured, nothing tuned.",
        "",
        markdown_table(summaries),
        "",
        *(f"![{name}]({p.name})" for name, p in pngs.items()),
    ]
    if errors:
        md += ["", "## Failed runs", ""]
        md += [f"- `{e.objective}` seed {e.seed}: {e.error.splitlines()[0]}" for e in errors]
    (out / "compare.md").write_text("\n".join(md) + "\n")
    rows = [
        {k: v for k, v in vars(s).items() if k != "per_seed"} | {"per_seed": s.per_seed} for s in summaries
    ]
    (out / "summary.json").write_text(json.dumps({"target": target, "objectives": rows}, indent=2) + "\n")
    console.print(rich_table(summaries, f"conspo compare ({target_text} target)"))
    for e in errors:
        console.print(f"[red]failed[/red] {e.objective} seed {e.seed}: {e.error.splitlines()[0]}")
    console.print(f"table: {out / 'compare.md'}; plots: {', '.join(p.name for p in pngs.values()) or 'none'}")
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
            return report(out, objectives or manifest["objectives"], manifest["seeds"], args.target, console)
        if not objectives:
            raise ValueError("no objective given; e.g. --objectives grpo,conspo or --ablations")
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
        return report(out, objectives, seeds, args.target, console)
    finally:
        lock.release()
