"""Seed-averaged curves of several objectives on one axis: the plots of ``conspo compare``.

```python
plot_compare({"conspo": [rows_seed0, rows_seed1], "grpo": [...]}, "accuracy.png", key="eval/avg@4")
```
Drawn on matplotlib's Agg canvas directly (no pyplot), like ``conspo.trainer.plots``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from conspo.trainer.logging import metric_series

__all__ = ["plot_compare"]


def _mean_band(seeds: Sequence[Sequence[Mapping]], key: str, band: str) -> tuple[np.ndarray, ...]:
    per_seed = [dict(zip(*metric_series(rows, key))) for rows in seeds]
    per_seed = [s for s in per_seed if s]
    if not per_seed:
        return (np.array([]),) * 4
    # Steps every seed logged; if the seeds share none (different eval schedules), every step any logged.
    common = set.intersection(*(set(s) for s in per_seed))
    steps = sorted(common or set().union(*(set(s) for s in per_seed)))
    means, lows, highs = [], [], []
    for step in steps:
        values = np.array([s[step] for s in per_seed if step in s])
        mean = values.mean()
        if band == "std":
            spread = values.std(ddof=1) if len(values) > 1 else 0.0
            low, high = mean - spread, mean + spread
        else:
            low, high = values.min(), values.max()
        means.append(mean)
        lows.append(low)
        highs.append(high)
    return np.asarray(steps), np.asarray(means), np.asarray(lows), np.asarray(highs)


def plot_compare(
    runs: Mapping[str, Sequence[Sequence[Mapping]]],
    out_png: str | os.PathLike,
    key: str,
    *,
    band: str = "std",
    title: str | None = None,
    ylabel: str | None = None,
) -> Path:
    """One line per objective: the mean of ``key`` over its seeds, with a shaded band; returns the PNG path.

    ``runs`` maps an objective's name to its seeds' metric rows (each a `read_metrics` list). ``band`` is
    ``"std"`` (mean +- one sample standard deviation over seeds) or ``"minmax"``. Objectives that never logged
    ``key`` are listed in the legend as missing rather than failing the whole plot.
    """
    if band not in ("std", "minmax"):
        raise ValueError(f"band must be 'std' or 'minmax', got {band!r}")
    if not runs:
        raise ValueError("plot_compare needs at least one run")
    fig = Figure(figsize=(6.4, 4.0), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    drawn = 0
    for name, seeds in runs.items():
        steps, mean, low, high = _mean_band(seeds, key, band)
        if len(steps) == 0:
            ax.plot([], [], linestyle="none", label=f"{name} (no '{key}')")
            continue
        n = len(seeds)
        (line,) = ax.plot(
            steps, mean, marker="o" if len(steps) <= 20 else None, markersize=3, label=f"{name} (n={n})"
        )
        if n > 1:
            ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        drawn += 1
    if drawn == 0:
        raise ValueError(f"no run logged {key!r}")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel or key)
    ax.set_title(
        title or f"{key}: mean over seeds, band = {'+-1 std' if band == 'std' else 'min-max'}", fontsize=10
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, frameon=False)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
