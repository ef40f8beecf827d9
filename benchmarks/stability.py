"""Stability map of the CPU testbed: held-out accuracy over steps for a grid of learning rates x seeds.

For each objective, learning rate and seed, one ``conspo train`` run on the built-in testbed (the
``conspo train`` defaults but for the swept values), with held-out avg@k every ``--eval-every`` steps.
Every seed also gets an lr=0 control: the same prompts and evaluation draws with a policy that never moves,
so its curve is the evaluation noise and its value is what "learning" must beat.

Printed (and written to ``<out>/stability.md``): per (objective, lr), the mean held-out accuracy over seeds
at each evaluation step, the deepest early dip below the start, and the gain over the seed's own control at
the end (mean, min over seeds). Runs are resumable: a finished run keeps its ``result.json``.

    python benchmarks/stability.py                                      # the grid recorded in RESULTS.md
    python benchmarks/stability.py --lrs 1e-4,2e-4 --seeds 0,1 --steps 12
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from conspo.compare.runner import RunSpec, execute_runs
from conspo.config import config_to_dict, load_config
from conspo.trainer.config import TrainConfig

QUIET = [
    "logging.tensorboard=false",
    "logging.progress=false",
    "logging.plot=false",
    "checkpoint.save_best=false",
    "checkpoint.save_final=false",
]


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def _curve(run_dir: Path, key: str) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return {int(r["step"]): float(r[key]) for r in rows if key in r}


def _train_metric(run_dir: Path, key: str, steps: range) -> float | None:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    vals = [float(r[key]) for r in rows if key in r and int(r["step"]) in steps]
    return statistics.fmean(vals) if vals else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--objectives", default="conspo,grpo")
    p.add_argument("--lrs", default="2.5e-5,5e-5,1e-4,2e-4,4e-4")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--eval-every", type=int, default=3)
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", default="runs/stability")
    p.add_argument("--set", action="append", default=[], help="extra key=value override for every run")
    args = p.parse_args()

    objectives = args.objectives.split(",")
    lrs = [float(x) for x in args.lrs.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    base = [f"steps={args.steps}", f"eval.every={args.eval_every}", "num_threads=1", *QUIET, *args.set]

    specs: list[RunSpec] = []
    cells: list[tuple[str, float, int]] = []
    for seed in seeds:  # seed-major: early results cover every setting
        for objective, lr in [("control", 0.0)] + [(o, lr) for o in objectives for lr in lrs]:
            name = objective if objective != "control" else "conspo"
            run_dir = out / f"{objective}-lr{lr:g}" / f"seed{seed}"
            cfg = load_config(
                TrainConfig, None, [*base, f"seed={seed}", f"objective.name={name}", f"optim.lr={lr}"]
            )
            specs.append(RunSpec(f"{objective} lr={lr:g}", seed, str(run_dir), config_to_dict(cfg)))
            cells.append((objective, lr, seed))

    start = time.perf_counter()
    results = execute_runs(
        specs,
        args.jobs,
        on_done=lambda r, cached: print(
            f"  {r.objective} seed {r.seed}: {r.status}{' (cached)' if cached else f' in {r.seconds:.0f} s'}",
            flush=True,
        ),
    )
    wall = time.perf_counter() - start
    failed = [r for r in results if r.status != "ok"]
    for r in failed:
        print(f"FAILED {r.objective} seed {r.seed}: {r.error}", file=sys.stderr)

    curves = {cell: _curve(Path(s.run_dir), "eval/avg@4") for cell, s in zip(cells, specs)}
    eval_steps = sorted(next(iter(curves.values())))
    control_final = {seed: curves[("control", 0.0, seed)][eval_steps[-1]] for seed in seeds}
    control_sd = statistics.pstdev([v for seed in seeds for v in curves[("control", 0.0, seed)].values()])
    header = "| objective | lr | " + " | ".join(f"step {s}" for s in eval_steps)
    header += " | deepest dip | final - control (mean, min) | seeds above control | reward acc (last 5) |"
    lines = [
        f"Machine: {_cpu_model()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}; "
        f"{len(specs)} runs, {len(failed)} failed, {wall:.0f} s wall with --jobs {args.jobs}.",
        f"Command: python benchmarks/stability.py {' '.join(sys.argv[1:])}",
        f"Held-out avg@4, mean over seeds {seeds}; the lr=0 control's curve varies only by evaluation "
        f"draws (its std over steps and seeds: {control_sd:.3f}).",
        "",
        header,
        "|" + "---|" * (header.count("|") - 1),
    ]
    for objective, lr in [("control", 0.0)] + [(o, lr) for o in objectives for lr in lrs]:
        per_seed = [curves[(objective, lr, seed)] for seed in seeds]
        means = [statistics.fmean(c[s] for c in per_seed) for s in eval_steps]
        dip = min(min(c[s] - c[eval_steps[0]] for s in eval_steps) for c in per_seed)
        gains = [curves[(objective, lr, seed)][eval_steps[-1]] - control_final[seed] for seed in seeds]
        above = sum(g > 0 for g in gains)
        rewards = [
            _train_metric(Path(s.run_dir), "reward/accuracy", range(args.steps - 4, args.steps + 1))
            for cell, s in zip(cells, specs)
            if cell[0] == objective and cell[1] == lr
        ]
        reward = statistics.fmean(r for r in rewards if r is not None)
        lines.append(
            f"| {objective} | {lr:g} | "
            + " | ".join(f"{m:.3f}" for m in means)
            + f" | {dip:+.3f} | {statistics.fmean(gains):+.3f}, {min(gains):+.3f} | {above}/{len(seeds)} "
            + f"| {reward:.3f} |"
        )
    text = "\n".join(lines)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "stability.md").write_text(text + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
