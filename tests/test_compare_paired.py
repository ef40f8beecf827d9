"""Paired comparison: per-seed differences, t and bootstrap intervals, verdicts, power, the report files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conspo.cli import main
from conspo.compare.paired import (
    min_detectable,
    paired_diff,
    paired_table,
    seeds_needed,
    t_cdf,
    t_quantile,
)
from conspo.compare.runner import RESULT_FILE, run_dir_for


@pytest.mark.parametrize(
    ("df", "q975", "q80"),
    # Student t table values (4 decimals)
    [
        (1, 12.7062, 1.3764),
        (2, 4.3027, 1.0607),
        (4, 2.7764, 0.9410),
        (7, 2.3646, 0.8960),
        (30, 2.0423, 0.8538),
    ],
)
def test_t_quantiles_match_the_table(df, q975, q80):
    assert t_quantile(0.975, df) == pytest.approx(q975, abs=1e-4)
    assert t_quantile(0.80, df) == pytest.approx(q80, abs=1e-4)
    assert t_quantile(0.025, df) == pytest.approx(-q975, abs=1e-4)
    assert t_cdf(q975, df) == pytest.approx(0.975, abs=1e-5)


def test_large_df_tends_to_the_normal():
    assert t_quantile(0.975, 100_000) == pytest.approx(1.95996, abs=1e-4)


def test_pairing_removes_the_shared_seed_variance():
    # Seeds differ a lot (shared), the objective is always 0.02 above: unpaired stds hide it, pairing does not.
    base = {0: 0.30, 1: 0.55, 2: 0.70, 3: 0.42, 4: 0.61, 5: 0.50, 6: 0.38, 7: 0.66}
    shift = {0: 0.021, 1: 0.019, 2: 0.020, 3: 0.022, 4: 0.018, 5: 0.020, 6: 0.021, 7: 0.019}
    obj = {s: base[s] + shift[s] for s in base}
    p = paired_diff("conspo", "grpo", "final", obj, base)
    assert p.n == 8 and p.mean == pytest.approx(0.020, abs=1e-9)
    assert p.wins == 8 and p.losses == 0 and p.ties == 0
    assert p.verdict == "better"
    lo, hi = p.t_interval
    d = np.array([shift[s] for s in sorted(shift)])
    half = 2.3646 * d.std(ddof=1) / math.sqrt(8)
    assert lo == pytest.approx(d.mean() - half, abs=1e-6) and hi == pytest.approx(d.mean() + half, abs=1e-6)
    assert lo < p.bootstrap_interval[0] <= p.bootstrap_interval[1] < hi  # bootstrap: narrower with 8 seeds
    assert np.std(list(base.values()), ddof=1) > 5 * p.mean  # the unpaired spread would swamp it
    worse = paired_diff("x", "grpo", "final", base, obj)
    assert worse.verdict == "worse" and worse.losses == 8


def test_noisy_difference_is_no_detectable_difference_and_the_power_line_says_what_would():
    base = {s: 0.5 for s in range(8)}
    obj = {s: 0.5 + d for s, d in enumerate([0.05, -0.04, 0.06, -0.03, 0.02, -0.05, 0.04, 0.01])}
    p = paired_diff("dapo", "grpo", "auc", obj, base)
    assert p.verdict == "no detectable difference at this budget"
    assert p.t_interval[0] < 0 < p.t_interval[1]
    assert p.wins == 5 and p.losses == 3
    # detectable with 80% power: (t.975 + t.80) sd / sqrt(n) at n - 1 = 7 degrees of freedom
    assert p.min_detectable == pytest.approx((2.3646 + 0.8960) * p.sd / math.sqrt(8), rel=1e-4)
    assert p.min_detectable > abs(p.mean)
    n = p.seeds_needed
    assert n is not None and n > 8
    assert min_detectable(p.sd, n) <= abs(p.mean) < min_detectable(p.sd, n - 1)


def test_identical_runs_one_seed_and_missing_seeds():
    same = paired_diff("conspo:margin=none", "conspo", "final", {0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6})
    assert same.verdict == "identical on every seed" and same.ties == 2 and same.seeds_needed is None
    one = paired_diff("a", "b", "final", {0: 0.6}, {0: 0.5})
    assert one.verdict == "one seed: no interval" and one.t_interval is None and one.wins == 1
    # only the seeds both finished count
    partial = paired_diff("a", "b", "final", {0: 0.6, 1: 0.7, 2: None}, {0: 0.5, 2: 0.4, 3: 0.1})
    assert partial.seeds == [0]
    assert paired_diff("a", "b", "final", {}, {0: 0.5}).verdict == "no paired seeds"
    assert seeds_needed(0.0, 0.1) is None


def test_paired_table_every_objective_against_the_baseline():
    per_seed = {
        "grpo": {0: {"final": 0.5, "auc": 0.4}, 1: {"final": 0.6, "auc": 0.5}},
        "conspo": {0: {"final": 0.7, "auc": 0.5}, 1: {"final": 0.7, "auc": 0.45}},
        "dapo": {0: {"final": 0.4, "auc": 0.4}, 1: {"final": 0.5, "auc": 0.5}},
    }
    table = paired_table(per_seed, "grpo")
    assert [(p.objective, p.metric) for p in table] == [
        ("conspo", "final"),
        ("conspo", "auc"),
        ("dapo", "final"),
        ("dapo", "auc"),
    ]
    assert table[0].diffs == pytest.approx([0.2, 0.1]) and table[1].diffs == pytest.approx([0.1, -0.05])
    assert [p.objective for p in paired_table(per_seed, "conspo")][0] == "grpo"
    with pytest.raises(ValueError, match="baseline 'gspo'"):
        paired_table(per_seed, "gspo")


def _fake_compare(out, finals: dict[str, list[float]]) -> None:
    """A compare folder as `conspo compare` leaves it: manifest, per-run metrics.jsonl and result.json."""
    objectives = list(finals)
    seeds = list(range(len(next(iter(finals.values())))))
    config = {"eval": {"samples": 4, "max_problems": 100}}
    (out / "compare.json").parent.mkdir(parents=True, exist_ok=True)
    (out / "compare.json").write_text(
        json.dumps({"objectives": objectives, "seeds": seeds, "config": config, "settings": "fake"})
    )
    for objective, values in finals.items():
        for seed, final in enumerate(values):
            run = run_dir_for(out, objective, seed)
            run.mkdir(parents=True)
            rows = [{"step": 0, "eval/accuracy": 0.3 + 0.01 * seed}, {"step": 10, "eval/accuracy": final}]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            result = {
                "objective": objective,
                "seed": seed,
                "status": "ok",
                "run_dir": str(run),
                "seconds": 1.0,
            }
            (run / RESULT_FILE).write_text(json.dumps(result))


def test_report_only_writes_the_paired_report_with_the_chosen_baseline(tmp_path, capsys):
    out = tmp_path / "cmp"
    _fake_compare(
        out,
        {
            "grpo": [0.50, 0.60, 0.55, 0.45],
            "conspo": [0.60, 0.71, 0.64, 0.56],  # +0.10, +0.11, +0.09, +0.11
            "dapo": [0.52, 0.58, 0.56, 0.44],
        },
    )
    assert main(["compare", "--out", str(out), "--report-only"]) == 0
    printed = capsys.readouterr().out
    assert "paired differences to grpo" in printed and "better" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"] == "grpo"
    rows = {(p["objective"], p["metric"]): p for p in report["paired"]}
    assert rows[("conspo", "final")]["verdict"] == "better"
    assert rows[("conspo", "final")]["mean"] == pytest.approx(0.1025)
    assert rows[("dapo", "final")]["verdict"] == "no detectable difference at this budget"
    assert report["noise"]["eval_draws"] == 400
    assert report["noise"]["eval_sd"] == pytest.approx(0.025, abs=0.002)  # sqrt(a(1-a)/400) at a ~ 0.55
    md = (out / "report.md").read_text()
    assert "| `conspo` | final acc | 4 | +0.102 |" in md and "paired.png" in md
    assert "## Paired differences to `grpo`" in (out / "compare.md").read_text()
    assert (out / "paired.png").read_bytes()[:4] == b"\x89PNG"
    assert json.loads((out / "summary.json").read_text())["baseline"] == "grpo"

    assert main(["compare", "--out", str(out), "--report-only", "--baseline", "conspo"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["baseline"] == "conspo"
    assert {p["objective"] for p in report["paired"]} == {"grpo", "dapo"}
    assert all(p["verdict"] == "worse" for p in report["paired"] if p["metric"] == "final")


def test_a_baseline_that_is_not_compared_is_a_usage_error(tmp_path, capsys):
    out = tmp_path / "cmp"
    _fake_compare(out, {"grpo": [0.5, 0.6], "conspo": [0.6, 0.7]})
    assert main(["compare", "--out", str(out), "--report-only", "--baseline", "dapo"]) == 2
    assert "--baseline 'dapo' is not one of the objectives: grpo, conspo" in capsys.readouterr().err
    argv = ["compare", "--objectives", "grpo,conspo", "--baseline", "dapo", "--out", str(tmp_path / "x")]
    assert main(argv) == 2


def test_the_verdict_is_the_t_interval_not_the_narrower_bootstrap():
    # Three seeds, all above: the bootstrap interval excludes 0, the t interval (t = 4.30 at 2 df) does not.
    p = paired_diff("conspo", "grpo", "final", {0: 0.51, 1: 0.52, 2: 0.59}, {0: 0.5, 1: 0.5, 2: 0.5})
    assert p.bootstrap_interval[0] > 0 > p.t_interval[0]
    assert p.wins == 3 and p.verdict == "no detectable difference at this budget"
