"""Evaluation reports: the terminal table (like the paper's Table 1), ``report.md``, ``report.json`` and
``samples.jsonl`` (every sample, to inspect failures)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conspo.eval.runner import BenchmarkResult

__all__ = ["ModelReport", "extra_metrics", "markdown_report", "render_table", "table_rows", "write_reports"]


@dataclass
class ModelReport:
    """One model's results on every benchmark, keyed by benchmark name (in evaluation order)."""

    label: str
    model: str
    fingerprint: str = ""
    results: dict[str, BenchmarkResult] = field(default_factory=dict)

    def average(self, benchmarks: Sequence[str]) -> float | None:
        """Mean headline score over ``benchmarks``; None if this model lacks one of them."""
        if not benchmarks or any(b not in self.results for b in benchmarks):
            return None
        return sum(self.results[b].score for b in benchmarks) / len(benchmarks)


def _benchmarks(reports: Sequence[ModelReport]) -> list[str]:
    names: list[str] = []
    for report in reports:
        names.extend(b for b in report.results if b not in names)
    return names


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}"


def extra_metrics(reports: Sequence[ModelReport]) -> list[str]:
    """Metric keys beyond the headline (``pass@8``, ``maj@16``, ``greedy``...), in first-seen order."""
    keys: list[str] = []
    for report in reports:
        for result in report.results.values():
            keys.extend(k for k in result.metrics if k != result.headline and k != "pass@1" and k not in keys)
    return keys


def table_rows(
    reports: Sequence[ModelReport], metric: str | None = None
) -> tuple[list[str], list[list[str]]]:
    """Header and rows (percentages, one decimal) for one metric; ``None`` = each benchmark's headline."""
    benchmarks = _benchmarks(reports)
    header = ["Model"]
    for b in benchmarks:
        labels = {r.results[b].headline_label for r in reports if b in r.results}
        header.append(f"{b} ({metric or '/'.join(sorted(labels))})")
    header.append("Avg")
    rows = []
    for report in reports:
        values: list[float | None] = []
        for b in benchmarks:
            result = report.results.get(b)
            if result is None:
                values.append(None)
            else:
                values.append(result.score if metric is None else result.metrics.get(metric))
        known = [v for v in values if v is not None]
        average = sum(known) / len(known) if known and len(known) == len(values) else None
        rows.append([report.label, *(_pct(v) for v in values), _pct(average)])
    return header, rows


def render_table(reports: Sequence[ModelReport], metric: str | None = None, title: str | None = None) -> Any:
    """A ``rich`` table: models as rows, benchmarks as columns, plus the average."""
    from rich.table import Table

    header, rows = table_rows(reports, metric)
    table = Table(title=title or (metric or "Accuracy (%)"))
    table.add_column(header[0], style="bold")
    for name in header[1:]:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def _markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def markdown_report(reports: Sequence[ModelReport], config: dict[str, Any]) -> str:
    """``report.md``: the headline table, one table per extra metric, then run details."""
    parts = ["# conspo eval", "", "Accuracy in %; Avg is the mean over the benchmarks.", ""]
    parts += [_markdown_table(*table_rows(reports)), ""]
    for metric in extra_metrics(reports):
        parts += [f"## {metric}", "", _markdown_table(*table_rows(reports, metric)), ""]
    parts += ["## Details", ""]
    parts += ["| Model | Benchmark | problems | n | truncated | mean tokens | generated | cached |"]
    parts += ["|---|---|---:|---:|---:|---:|---:|---:|"]
    for report in reports:
        for name, r in report.results.items():
            parts.append(
                f"| {report.label} | {name} | {len(r.problems)} | {r.n} | {100 * r.extra.get('truncated', 0):.1f}% "
                f"| {r.extra.get('mean_tokens', 0):.0f} | {r.num_generated} | {r.num_cached} |"
            )
    parts += ["", "## Configuration", "", "```json", json.dumps(config, indent=2, default=str), "```", ""]
    models = "\n".join(f"- `{r.label}`: `{r.model}` (fingerprint `{r.fingerprint}`)" for r in reports)
    parts += ["## Models", "", models, ""]
    return "\n".join(parts)


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_reports(
    reports: Sequence[ModelReport], out_dir: str | Path, config: dict[str, Any]
) -> dict[str, Path]:
    """Write ``report.md``, ``report.json`` and ``samples.jsonl`` under ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    benchmarks = _benchmarks(reports)
    summary = {
        "config": config,
        "benchmarks": benchmarks,
        "models": [
            {
                "label": r.label,
                "model": r.model,
                "fingerprint": r.fingerprint,
                "average": r.average(benchmarks),
                "benchmarks": {name: result.summary() for name, result in r.results.items()},
            }
            for r in reports
        ],
    }
    paths = {"markdown": out / "report.md", "json": out / "report.json", "samples": out / "samples.jsonl"}
    _write_atomic(paths["markdown"], markdown_report(reports, config))
    _write_atomic(paths["json"], json.dumps(summary, indent=2, default=str) + "\n")
    lines = []
    for r in reports:
        for name, result in r.results.items():
            for problem in result.problems:
                for s in [*problem.samples, *([problem.greedy] if problem.greedy else [])]:
                    lines.append(
                        json.dumps(
                            {
                                "model": r.label,
                                "benchmark": name,
                                "problem_id": s.problem_id,
                                "sample_index": s.sample_index,
                                "answer": problem.answer,
                                "extracted": s.extracted,
                                "correct": s.correct,
                                "reason": s.reason,
                                "truncated": s.truncated,
                                "num_tokens": s.num_tokens,
                                "completion": s.completion,
                            },
                            ensure_ascii=False,
                        )
                    )
    _write_atomic(paths["samples"], "\n".join(lines) + ("\n" if lines else ""))
    return paths
