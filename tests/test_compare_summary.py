"""The numbers of the compare table (final, best, steps to target, AUC, mean ± std) and its plots."""

from __future__ import annotations

import math

import pytest

from conspo.compare.summary import default_target, markdown_table, plot_all, seed_metrics, summarize


def rows(accuracy: dict[int, float], reward: float = 0.5, seconds: float = 2.0, diagnostics: bool = False):
    """Metric rows as the trainer logs them: eval rows at some steps, a training row at every step >= 1."""
    out = [{"step": 0, "eval/accuracy": accuracy[0]}] if 0 in accuracy else []
    for step in range(1, max(accuracy) + 1):
        row = {"step": step, "reward/mean": reward, "time/step": seconds}
        if step in accuracy:
            row["eval/accuracy"] = accuracy[step]
        if diagnostics:
            row |= {"conspo/score_gap": 0.01 * step, "conspo/p_pos": 0.2, "conspo/margin": 0.001 * step}
        out.append(row)
    return out


def test_seed_metrics_by_hand():
    m = seed_metrics(rows({0: 0.2, 10: 0.4, 20: 0.6}, reward=0.7, seconds=3.0), target=0.4)
    assert m["initial"] == 0.2 and m["final"] == 0.6 and m["best"] == 0.6
    assert m["auc"] == pytest.approx((10 * 0.3 + 10 * 0.5) / 20)  # trapezoids / span
    assert m["steps_to_target"] == 10
    assert m["reward"] == pytest.approx(0.7) and m["seconds_per_step"] == pytest.approx(3.0)
    assert seed_metrics(rows({0: 0.2, 10: 0.3}), target=0.9)["steps_to_target"] is None


def test_best_ignores_the_initial_policy():
    m = seed_metrics(rows({0: 0.9, 5: 0.1, 10: 0.3}), target=None)
    assert m["best"] == 0.3 and m["initial"] == 0.9


def test_summary_is_mean_and_sample_std_over_seeds():
    runs = {
        "grpo": {0: rows({0: 0.2, 10: 0.4}), 1: rows({0: 0.2, 10: 0.6})},
        "conspo": {0: rows({0: 0.2, 10: 0.5})},
    }
    s = {x.objective: x for x in summarize(runs, {"conspo": 1}, target=0.5)}
    assert s["grpo"].final == pytest.approx((0.5, math.sqrt(0.02)))
    assert s["grpo"].reached == 1 and s["grpo"].steps_to_target == (10.0, 0.0)
    assert s["conspo"].seeds_ok == 1 and s["conspo"].seeds_failed == 1 and s["conspo"].final == (0.5, 0.0)
    table = markdown_table(list(s.values()))
    assert "| `grpo` | 2 |" in table and "10.0 (1/2)" in table
    assert "0.500 ± 0.141" in table  # grpo's final accuracy
    assert "1 (+1 failed)" in table


def test_default_target_is_halfway_to_the_best_final():
    runs = {"a": {0: rows({0: 0.2, 10: 0.4})}, "b": {0: rows({0: 0.2, 10: 0.8})}}
    assert default_target(runs) == pytest.approx(0.5)
    flat = {"a": {0: rows({0: 0.5, 10: 0.4})}}
    assert default_target(flat) is None  # nothing improved: no meaningful target


def test_plots_include_diagnostics_only_where_logged(tmp_path):
    runs = {
        "grpo": {0: rows({0: 0.2, 4: 0.4}), 1: rows({0: 0.2, 4: 0.5})},
        "conspo": {0: rows({0: 0.2, 4: 0.6}, diagnostics=True), 1: rows({0: 0.2, 4: 0.4}, diagnostics=True)},
    }
    pngs = plot_all(runs, tmp_path)
    assert set(pngs) == {"accuracy", "reward", "score_gap", "p_pos", "margin"}
    for path in pngs.values():
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    only_grpo = plot_all({"grpo": runs["grpo"]}, tmp_path / "g")
    assert set(only_grpo) == {"accuracy", "reward"}
