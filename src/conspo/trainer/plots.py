"""Training curves from ``metrics.jsonl`` (the seed-averaged comparison plot is ``conspo.compare.plots``).

Figures are drawn on matplotlib's Agg canvas directly (no pyplot), so plotting never changes the backend
or global state of the process that imports conspo.

```python
plot_training_curves(run_dir / "metrics.jsonl", run_dir / "curves.png")
```
"""

from __future__ import annotations

import fnmatch
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from conspo.trainer.logging import metric_series, read_metrics

__all__ = ["DEFAULT_PANELS", "plot_training_curves"]

DEFAULT_PANELS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "train reward / accuracy",
        ("reward/mean", "reward", "reward/accuracy", "accuracy", "train/reward*", "train/acc*"),
    ),
    ("held-out accuracy", ("eval/*",)),
    ("ConSPO score gap (s+ - s-)", ("conspo/score_gap",)),
    ("ConSPO P+ (positive's softmax mass)", ("conspo/p_pos",)),
    ("ConSPO margin m_t", ("conspo/margin",)),
    ("response length (tokens)", ("*length*",)),
    ("entropy (nats/token)", ("*entropy*",)),
)
"""(title, metric-name globs) of the default panels; a panel with no matching metric is skipped."""


def _numeric_keys(rows: Sequence[Mapping]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for key, value in row.items():
            if (
                key not in ("step", "timestamp")
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
            ):
                seen.setdefault(key, None)
    return list(seen)


def _resolve_panels(
    rows: Sequence[Mapping], keys: Sequence[str | Sequence[str]] | None
) -> list[tuple[str, list[str]]]:
    available = _numeric_keys(rows)
    if keys is not None:
        spec = [
            (k if isinstance(k, str) else ", ".join(k), (k,) if isinstance(k, str) else tuple(k))
            for k in keys
        ]
    else:
        spec = list(DEFAULT_PANELS)
    panels, used = [], set()
    for title, patterns in spec:
        matched = []
        for pattern in patterns:
            for key in available:
                if key not in matched and key not in used and fnmatch.fnmatchcase(key, pattern):
                    matched.append(key)
        if matched:
            panels.append((title, matched))
            used.update(matched)
    return panels


def _grid(n: int) -> tuple[int, int]:
    cols = min(3, n)
    return math.ceil(n / cols), cols


def plot_training_curves(
    metrics_jsonl_path: str | os.PathLike,
    out_png: str | os.PathLike,
    keys: Sequence[str | Sequence[str]] | None = None,
    *,
    title: str | None = None,
) -> Path:
    """Draw one panel per metric group against the step and save a PNG; returns its path.

    ``keys``: None = the default panels (`DEFAULT_PANELS`: reward/accuracy, held-out ``eval/*``, the ConSPO
    diagnostics, response length, entropy); otherwise one panel per item, an item being a metric name (or
    glob) or a list of them drawn together. Metrics missing from the file are skipped; if none is found a
    ValueError lists the metrics the file has.
    """
    rows = read_metrics(metrics_jsonl_path)
    panels = _resolve_panels(rows, keys)
    if not panels:
        raise ValueError(
            f"{metrics_jsonl_path}: none of the requested metrics are present; it has {_numeric_keys(rows)[:20]}"
        )
    nrows, ncols = _grid(len(panels))
    fig = Figure(figsize=(4.6 * ncols, 3.2 * nrows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (panel_title, names) in zip(axes, panels):
        for name in names:
            steps, values = metric_series(rows, name)
            sparse = len(steps) <= 20  # eval metrics: a few points, show them
            ax.plot(steps, values, marker="o" if sparse else None, markersize=3, linewidth=1.4, label=name)
        ax.set_title(panel_title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(names) > 1 or names[0] != panel_title:
            ax.legend(fontsize=7, frameon=False)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
