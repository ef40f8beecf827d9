"""Paired comparison of objectives: per-seed differences to a baseline, intervals, a verdict and a power line.

For a given seed every objective of a compare starts from the same policy, sees the same prompts and is
evaluated on the same held-out problems with the same sample draws (``conspo.eval.cache.sample_seed``), so
most of the seed-to-seed variance is shared. The difference ``d_s = metric(objective, s) - metric(baseline,
s)`` removes it; the statistics below are over the seeds both finished:

- **mean difference** and a **95% t interval** ``mean ± t(0.975, n-1) · sd / sqrt(n)`` (``sd`` the sample
  standard deviation of the ``d_s``). With a handful of seeds this is the honest interval; the verdict uses it.
- a **95% paired bootstrap** percentile interval (resampling seeds, 10 000 draws, seeded), shown beside it:
  with few seeds it is too narrow (it cannot see beyond the values it has), which is why it is not the verdict.
- **wins**: seeds where the objective is strictly above the baseline (``wins/ties/losses``).
- **verdict**: ``better`` when the t interval lies above 0, ``worse`` when below, ``identical on every
  seed`` when all differences are 0, else ``no detectable difference at this budget``.
- **power line**: the smallest true difference this many seeds would detect (two-sided 5% test, 80% power)
  given the observed paired spread, ``(t(0.975, n-1) + t(0.80, n-1)) · sd / sqrt(n)``; and the number of
  seeds that would detect the observed mean difference at the same spread (``seeds needed``).

Numpy only: the Student t quantile comes from the regularized incomplete beta function (``t_quantile``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "METRICS",
    "PairedDiff",
    "markdown_paired",
    "min_detectable",
    "paired_diff",
    "paired_table",
    "plot_paired",
    "rich_paired",
    "seeds_needed",
    "t_cdf",
    "t_quantile",
]

METRICS: tuple[tuple[str, str], ...] = (("final", "final acc"), ("auc", "AUC"))
"""The per-seed numbers compared (keys of ``summary.seed_metrics``) and their labels."""

LEVEL = 0.95
POWER = 0.80
BOOTSTRAP_DRAWS = 10_000
MAX_SEEDS_NEEDED = 10_000


# -- Student t distribution (no scipy) ------------------------------------------------------------------
def _betacf(a: float, b: float, x: float) -> float:
    # Continued fraction of the incomplete beta function (modified Lentz), as in Numerical Recipes 6.4.
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    tail = 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on ``t_cdf``)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile level must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def min_detectable(sd: float, n: int, level: float = LEVEL, power: float = POWER) -> float | None:
    """Smallest true mean difference a two-sided paired t test on ``n`` seeds detects with ``power``."""
    if n < 2 or not math.isfinite(sd):
        return None
    df = n - 1
    return (t_quantile(0.5 + level / 2, df) + t_quantile(power, df)) * sd / math.sqrt(n)


def seeds_needed(mean: float, sd: float, level: float = LEVEL, power: float = POWER) -> int | None:
    """Fewest seeds whose ``min_detectable`` at spread ``sd`` is at most ``|mean|`` (None: beyond 10 000)."""
    if not math.isfinite(mean) or mean == 0.0:
        return None
    if sd == 0.0:
        return 2

    def enough(n: int) -> bool:
        mde = min_detectable(sd, n, level, power)
        return mde is not None and mde <= abs(mean)

    hi = 2
    while not enough(hi):  # min_detectable falls with n: double, then bisect
        if hi >= MAX_SEEDS_NEEDED:
            return None
        hi = min(2 * hi, MAX_SEEDS_NEEDED)
    lo = max(1, hi // 2)  # not enough (or below 2)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


# -- the comparison ---------------------------------------------------------------------------------
@dataclass
class PairedDiff:
    """One objective against the baseline on one metric, over the seeds both finished."""

    objective: str
    baseline: str
    metric: str
    seeds: list[int] = field(default_factory=list)
    diffs: list[float] = field(default_factory=list)
    mean: float | None = None
    sd: float | None = None
    t_interval: tuple[float, float] | None = None
    bootstrap_interval: tuple[float, float] | None = None
    wins: int = 0
    ties: int = 0
    losses: int = 0
    verdict: str = "no paired seeds"
    min_detectable: float | None = None
    seeds_needed: int | None = None

    @property
    def n(self) -> int:
        return len(self.diffs)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"n": self.n}


def _bootstrap(diffs: np.ndarray, level: float, seed: int = 0) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, len(diffs), size=(BOOTSTRAP_DRAWS, len(diffs)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return float(lo), float(hi)


def paired_diff(
    objective: str,
    baseline: str,
    metric: str,
    values: Mapping[int, float | None],
    base_values: Mapping[int, float | None],
    level: float = LEVEL,
) -> PairedDiff:
    """The paired statistics of ``values[s] - base_values[s]`` over the seeds where both are numbers."""
    seeds = sorted(
        s
        for s in values
        if s in base_values
        and values[s] is not None
        and base_values[s] is not None
        and math.isfinite(values[s])
        and math.isfinite(base_values[s])
    )
    out = PairedDiff(objective, baseline, metric, seeds=seeds)
    if not seeds:
        return out
    d = np.array([values[s] - base_values[s] for s in seeds], dtype=float)
    d[np.abs(d) < 1e-12] = 0.0  # the same accuracy on both sides is a tie, not a rounding-error win
    out.diffs = [float(x) for x in d]
    out.mean = float(d.mean())
    out.wins, out.ties, out.losses = int((d > 0).sum()), int((d == 0).sum()), int((d < 0).sum())
    if len(d) < 2:
        out.verdict = "one seed: no interval"
        return out
    out.sd = float(d.std(ddof=1))
    half = t_quantile(0.5 + level / 2, len(d) - 1) * out.sd / math.sqrt(len(d))
    out.t_interval = (out.mean - half, out.mean + half)
    out.bootstrap_interval = _bootstrap(d, level)
    if not d.any():
        out.verdict = "identical on every seed"
    elif out.t_interval[0] > 0:
        out.verdict = "better"
    elif out.t_interval[1] < 0:
        out.verdict = "worse"
    else:
        out.verdict = "no detectable difference at this budget"
    out.min_detectable = min_detectable(out.sd, len(d), level)
    out.seeds_needed = seeds_needed(out.mean, out.sd, level)
    return out


def paired_table(per_seed: Mapping[str, Mapping[int, Mapping[str, Any]]], baseline: str) -> list[PairedDiff]:
    """Every objective but ``baseline`` against it, one ``PairedDiff`` per metric of ``METRICS``.

    ``per_seed`` maps an objective to ``{seed: seed_metrics(...)}`` (``ObjectiveSummary.per_seed``).
    """
    if baseline not in per_seed:
        raise ValueError(f"baseline {baseline!r} has no finished run; objectives: {', '.join(per_seed)}")
    base = per_seed[baseline]
    out = []
    for objective, seeds in per_seed.items():
        if objective == baseline:
            continue
        for metric, _ in METRICS:
            out.append(
                paired_diff(
                    objective,
                    baseline,
                    metric,
                    {s: m.get(metric) for s, m in seeds.items()},
                    {s: m.get(metric) for s, m in base.items()},
                )
            )
    return out


PAIRED_COLUMNS = (
    "objective",
    "metric",
    "seeds",
    "mean diff",
    "95% t interval",
    "95% bootstrap",
    "wins/ties/losses",
    "verdict",
    "detectable (80% power)",
    "seeds needed",
)


def _interval(iv: tuple[float, float] | None) -> str:
    return "-" if iv is None else f"[{iv[0]:+.3f}, {iv[1]:+.3f}]"


def _paired_cells(p: PairedDiff) -> list[str]:
    label = dict(METRICS).get(p.metric, p.metric)
    if p.seeds_needed is not None:
        needed = f"{p.seeds_needed}" if p.seeds_needed <= MAX_SEEDS_NEEDED else "-"
    else:
        needed = "-" if p.mean in (None, 0.0) else f"> {MAX_SEEDS_NEEDED}"
    return [
        f"`{p.objective}`",
        label,
        str(p.n),
        "-" if p.mean is None else f"{p.mean:+.3f}",
        _interval(p.t_interval),
        _interval(p.bootstrap_interval),
        f"{p.wins}/{p.ties}/{p.losses}",
        p.verdict,
        "-" if p.min_detectable is None else f"{p.min_detectable:.3f}",
        needed,
    ]


def markdown_paired(diffs: Sequence[PairedDiff]) -> str:
    """The paired comparison as a Markdown table."""
    lines = ["| " + " | ".join(PAIRED_COLUMNS) + " |", "|" + "---|" * len(PAIRED_COLUMNS)]
    lines += ["| " + " | ".join(_paired_cells(p)) + " |" for p in diffs]
    return "\n".join(lines)


def rich_paired(diffs: Sequence[PairedDiff], title: str) -> Any:
    """The same table for the terminal (rich)."""
    from rich.table import Table

    table = Table(title=title)
    for i, name in enumerate(PAIRED_COLUMNS):
        table.add_column(name, justify="left" if i in (0, 1, 7) else "right")
    for p in diffs:
        table.add_row(*[c.strip("`") for c in _paired_cells(p)])
    return table


def plot_paired(diffs: Sequence[PairedDiff], out_png: str | Path) -> Path | None:
    """``paired.png``: per metric, each objective's per-seed differences (dots) and mean with its t interval."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not diffs:
        return None
    objectives = list(dict.fromkeys(p.objective for p in diffs))
    fig = Figure(figsize=(6.4 * len(METRICS) / 1.4, 0.9 + 0.45 * len(objectives)), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(METRICS), sharey=True, squeeze=False)[0]
    for ax, (metric, label) in zip(axes, METRICS):
        for row, objective in enumerate(objectives):
            p = next((x for x in diffs if x.objective == objective and x.metric == metric), None)
            if p is None or not p.diffs:
                continue
            jitter = np.linspace(-0.15, 0.15, len(p.diffs)) if len(p.diffs) > 1 else np.zeros(1)
            ax.scatter(p.diffs, row + jitter, s=12, color="0.55", zorder=2)
            if p.t_interval is not None:
                ax.plot(p.t_interval, [row, row], color="C0", linewidth=2.5, zorder=3)
            ax.plot([p.mean], [row], marker="D", color="C3", markersize=6, zorder=4)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel(f"{label}: objective - baseline")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(objectives)), objectives)
    axes[0].invert_yaxis()
    base = diffs[0].baseline
    fig.suptitle(
        f"paired differences to {base} (dots: seeds; bar: 95% t interval; diamond: mean)", fontsize=9
    )
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out
