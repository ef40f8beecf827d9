"""report.md / report.json / samples.jsonl and the terminal table, from real evaluate_problems results."""

from __future__ import annotations

import json

import pytest

from conspo.data import Problem
from conspo.eval.report import ModelReport, extra_metrics, render_table, table_rows, write_reports
from conspo.eval.runner import evaluate_problems
from conspo.rewards import check_equivalence, extract_answer
from conspo.rollout import Rollout, SamplingParams


class Verifier:
    def verify_batch(self, completions, answers):
        return [check_equivalence(a, extract_answer(c)) for c, a in zip(completions, answers)]

    def equivalent_pairs(self, pairs):
        return [check_equivalence(a, b).correct for a, b in pairs]


class Constant:
    """Every sample of every prompt answers `value`."""

    batch_size = 8

    def __init__(self, value: str) -> None:
        self.value = value

    def generate(self, prompts, n, params):
        return [
            Rollout(i, [1], [2, 3], f"\\boxed{{{self.value}}}", False)
            for i in range(len(prompts))
            for _ in range(n)
        ]


PROBLEMS = {
    "easy": [Problem("e1", "a", "1"), Problem("e2", "b", "2")],
    "hard": [
        Problem("h1", "c", "1"),
        Problem("h2", "d", "5"),
        Problem("h3", "e", "9"),
        Problem("h4", "f", "7"),
    ],
}


def model_report(label: str, value: str) -> ModelReport:
    report = ModelReport(label, f"/models/{label}", fingerprint=label)
    for name, problems in PROBLEMS.items():
        result = evaluate_problems(
            Constant(value),
            problems,
            Verifier(),
            n=2,
            ks=(1, 2),
            maj_ks=(2,),
            params=SamplingParams(max_new_tokens=4),
            template="testbed",
            benchmark=name,
        )
        result.label = "pass@1" if name == "easy" else ""
        report.results[name] = result
    return report


def test_tables_and_report_files(tmp_path):
    reports = [model_report("ones", "1"), model_report("sevens", "7")]
    header, rows = table_rows(reports)
    assert header == ["Model", "easy (pass@1)", "hard (avg@2)", "Avg"]
    # "1" solves e1 (1/2 of easy) and h1 (1/4 of hard); "7" solves only h4.
    assert rows == [["ones", "50.0", "25.0", "37.5"], ["sevens", "0.0", "25.0", "12.5"]]
    assert extra_metrics(reports) == ["pass@2", "maj@2"]
    assert table_rows(reports, "maj@2")[1][0] == ["ones", "50.0", "25.0", "37.5"]
    assert render_table(reports).row_count == 2

    paths = write_reports(reports, tmp_path / "out", {"preset": "test"})
    summary = json.loads(paths["json"].read_text())
    assert summary["benchmarks"] == ["easy", "hard"]
    assert summary["models"][0]["average"] == pytest.approx(0.375)
    assert summary["models"][1]["benchmarks"]["hard"]["metrics"]["avg@2"] == pytest.approx(0.25)
    assert summary["config"] == {"preset": "test"}

    samples = [json.loads(line) for line in paths["samples"].read_text().splitlines()]
    assert len(samples) == 2 * (2 + 4) * 2  # models x problems x n
    assert {s["model"] for s in samples} == {"ones", "sevens"}
    h2 = [s for s in samples if s["model"] == "ones" and s["problem_id"] == "h2"]
    assert [(s["sample_index"], s["answer"], s["extracted"], s["correct"], s["reason"]) for s in h2] == [
        (0, "5", "1", False, "not_equal"),
        (1, "5", "1", False, "not_equal"),
    ]
    # The file's verdicts reproduce the table: mean correctness per benchmark.
    easy_ones = [s["correct"] for s in samples if s["model"] == "ones" and s["benchmark"] == "easy"]
    assert sum(easy_ones) / len(easy_ones) == 0.5

    markdown = paths["markdown"].read_text()
    assert "| ones | 50.0 | 25.0 | 37.5 |" in markdown
    assert "## maj@2" in markdown and "/models/sevens" in markdown


def test_average_needs_every_benchmark():
    full, partial = model_report("ones", "1"), model_report("sevens", "7")
    del partial.results["hard"]
    _, rows = table_rows([full, partial])
    assert rows[1] == ["sevens", "0.0", "—", "—"]
    assert partial.average(["easy", "hard"]) is None
