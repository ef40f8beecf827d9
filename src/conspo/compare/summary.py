"""The numbers and pictures of ``conspo compare``, computed from the runs' ``metrics.jsonl`` files.

Per objective, over its seeds (mean +- sample standard deviation; a single seed has no spread):

- **final**: held-out accuracy (``eval/accuracy``, avg@k) at the last step;
- **best**: the best held-out accuracy at any evaluation after step 0;
- **steps to target**: the first evaluated step whose held-out accuracy reaches the target; the mean is over
  the seeds that reached it, shown with how many did (``12.0 (2/3)``);
- **AUC**: the area under the held-out accuracy curve divided by the step span (trapezoids over the
  evaluated steps), i.e. the run's mean accuracy; it rewards learning early as well as ending high;
- **train reward**: the mean of ``reward/mean`` over the last quarter of the steps;
- **s/step**: mean wall-clock seconds per step (noisy when runs share the cores).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from conspo.trainer.logging import metric_series

__all__ = [
    "ACCURACY_KEY",
    "DIAGNOSTICS",
    "REWARD_KEY",
    "ObjectiveSummary",
    "default_target",
    "markdown_table",
    "plot_all",
    "rich_table",
    "summarize",
]

ACCURACY_KEY = "eval/accuracy"
REWARD_KEY = "reward/mean"
DIAGNOSTICS: tuple[tuple[str, str], ...] = (
    ("conspo/score_gap", "ConSPO score gap s+ - s-"),
    ("conspo/p_pos", "ConSPO P+ (contrastive prob.)"),
    ("conspo/margin", "ConSPO margin m_t"),
)


@dataclass
class ObjectiveSummary:
    """One row of the table (values are (mean, std) over the seeds that finished)."""

    objective: str
    seeds_ok: int
    seeds_failed: int
    initial: tuple[float, float] | None = None
    final: tuple[float, float] | None = None
    best: tuple[float, float] | None = None
    auc: tuple[float, float] | None = None
    steps_to_target: tuple[float, float] | None = None
    reached: int = 0
    reward: tuple[float, float] | None = None
    seconds_per_step: tuple[float, float] | None = None
    per_seed: dict[int, dict[str, Any]] = field(default_factory=dict)


def _mean_std(values: Sequence[float]) -> tuple[float, float] | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def seed_metrics(rows: Sequence[Mapping[str, Any]], target: float | None) -> dict[str, Any]:
    """The per-seed numbers of one run's metric rows (see the module docstring)."""
    steps, acc = metric_series(rows, ACCURACY_KEY)
    out: dict[str, Any] = {"initial": None, "final": None, "best": None, "auc": None, "steps_to_target": None}
    if len(steps):
        out["initial"] = float(acc[0]) if steps[0] == 0 else None
        out["final"] = float(acc[-1])
        later = acc[steps > 0]
        out["best"] = float(later.max()) if len(later) else None
        span = steps[-1] - steps[0]
        out["auc"] = float(np.trapezoid(acc, steps) / span) if span > 0 else float(acc[0])
        if target is not None:
            hit = np.nonzero(acc >= target)[0]
            out["steps_to_target"] = float(steps[hit[0]]) if len(hit) else None
    r_steps, reward = metric_series(rows, REWARD_KEY)
    if len(r_steps):
        tail = reward[r_steps >= r_steps[-1] - (r_steps[-1] - r_steps[0]) * 0.25]
        out["reward"] = float(tail.mean())
    times = [r["time/step"] for r in rows if isinstance(r.get("time/step"), (int, float))]
    out["seconds_per_step"] = float(np.mean(times)) if times else None
    return out


def default_target(runs: Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]]) -> float | None:
    """Halfway from the mean initial accuracy to the best objective's mean final accuracy.

    The same threshold for every objective, set from the data so that it is neither trivially reached at
    step 0 nor out of reach; pass ``--target`` for a fixed one.
    """
    initials, finals = [], []
    for seeds in runs.values():
        per = [seed_metrics(rows, None) for rows in seeds.values()]
        initials += [p["initial"] for p in per if p["initial"] is not None]
        f = [p["final"] for p in per if p["final"] is not None]
        if f:
            finals.append(float(np.mean(f)))
    if not initials or not finals:
        return None
    start, best = float(np.mean(initials)), max(finals)
    return round(start + 0.5 * (best - start), 4) if best > start else None


def summarize(
    runs: Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]],
    failed: Mapping[str, int],
    target: float | None,
) -> list[ObjectiveSummary]:
    """One summary per objective from ``{objective: {seed: metric rows}}`` of its finished runs."""
    out = []
    for objective in dict.fromkeys([*runs, *failed]):
        seeds = runs.get(objective, {})
        per = {seed: seed_metrics(rows, target) for seed, rows in seeds.items()}

        def col(key: str, per: dict = per) -> list:
            return [p.get(key) for p in per.values()]

        reached = [v for v in col("steps_to_target") if v is not None]
        out.append(
            ObjectiveSummary(
                objective=objective,
                seeds_ok=len(seeds),
                seeds_failed=failed.get(objective, 0),
                initial=_mean_std(col("initial")),
                final=_mean_std(col("final")),
                best=_mean_std(col("best")),
                auc=_mean_std(col("auc")),
                steps_to_target=_mean_std(reached),
                reached=len(reached),
                reward=_mean_std(col("reward")),
                seconds_per_step=_mean_std(col("seconds_per_step")),
                per_seed=per,
            )
        )
    return out


def _fmt(v: tuple[float, float] | None, digits: int = 3, n: int = 2) -> str:
    if v is None:
        return "-"
    mean, std = v
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


COLUMNS = (
    "objective",
    "seeds",
    "initial acc",
    "final acc",
    "best acc",
    "steps to target",
    "AUC (mean acc)",
    "train reward",
    "s/step",
)


def _cells(s: ObjectiveSummary) -> list[str]:
    n = s.seeds_ok
    seeds = f"{n}" + (f" (+{s.seeds_failed} failed)" if s.seeds_failed else "")
    if s.steps_to_target is None:
        target = f"not reached (0/{n})" if n else "-"
    else:
        target = f"{_fmt(s.steps_to_target, 1, s.reached)} ({s.reached}/{n})"
    return [
        f"`{s.objective}`",
        seeds,
        _fmt(s.initial, 3, n),
        _fmt(s.final, 3, n),
        _fmt(s.best, 3, n),
        target,
        _fmt(s.auc, 3, n),
        _fmt(s.reward, 3, n),
        _fmt(s.seconds_per_step, 2, n),
    ]


def markdown_table(summaries: Sequence[ObjectiveSummary]) -> str:
    """The comparison as a Markdown table (mean ± std over seeds)."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_cells(s)) + " |" for s in summaries]
    return "\n".join(lines)


def rich_table(summaries: Sequence[ObjectiveSummary], title: str) -> Any:
    """The same table for the terminal (rich)."""
    from rich.table import Table

    table = Table(title=title)
    for i, name in enumerate(COLUMNS):
        table.add_column(name, justify="left" if i == 0 else "right")
    for s in summaries:
        table.add_row(*[c.strip("`") for c in _cells(s)])
    return table


def _windowed(rows: Sequence[Mapping[str, Any]], key: str, width: int) -> list[dict[str, Any]]:
    """One row per window of ``width`` steps (at its last step) holding the mean of ``key`` over the window.

    Training metrics are missing at skipped steps (no valid group), at different steps for different seeds;
    window means give every seed a value at the same steps, so the mean over seeds is over all of them.
    """
    steps, values = metric_series([r for r in rows if r.get("step", 0) > 0], key)
    if not len(steps):
        return []
    bins = np.ceil(steps / width).astype(int) * width
    return [{"step": int(b), key: float(values[bins == b].mean())} for b in np.unique(bins)]


def plot_all(
    runs: Mapping[str, Mapping[int, Sequence[Mapping[str, Any]]]], out_dir: Path, window: int | None = None
) -> dict[str, Path]:
    """accuracy.png, reward.png and one PNG per ConSPO diagnostic that some run logged; returns them by name.

    Held-out accuracy is drawn at its evaluated steps; the training metrics as means over windows of
    ``window`` steps (default: about 10 windows over the run), see ``_windowed``.
    """
    from conspo.compare.plots import plot_compare

    grouped = {name: list(seeds.values()) for name, seeds in runs.items() if seeds}
    if not grouped:
        return {}
    last = max((r.get("step", 0) for seeds in grouped.values() for rows in seeds for r in rows), default=1)
    width = window or max(1, round(last / 10))
    pngs: dict[str, Path] = {}
    panels = [
        ("accuracy", ACCURACY_KEY, "held-out accuracy (avg@k)"),
        ("reward", REWARD_KEY, "training reward"),
        *((key.split("/")[1], key, label) for key, label in DIAGNOSTICS),
    ]
    for name, key, label in panels:
        if key == ACCURACY_KEY:
            data = grouped
            how = ""
        else:
            data = {n: [_windowed(rows, key, width) for rows in seeds] for n, seeds in grouped.items()}
            how = f", {width}-step means" if width > 1 else ""
        have = {n: seeds for n, seeds in data.items() if any(key in row for rows in seeds for row in rows)}
        if not have:
            continue
        pngs[name] = plot_compare(
            have,
            out_dir / f"{name}.png",
            key=key,
            ylabel=label,
            title=f"{label} (mean ± std over seeds{how})",
        )
    return pngs
