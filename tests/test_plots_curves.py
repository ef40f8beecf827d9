"""Training-curve and seed-comparison plots: the right panels, the right means and bands, valid PNGs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conspo.compare.plots import _mean_band, plot_compare
from conspo.trainer.plots import _resolve_panels, plot_training_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def conspo_rows(n: int = 12):
    rows = []
    for step in range(1, n + 1):
        row = {
            "step": step,
            "timestamp": 1.0 * step,
            "reward/mean": step / n,
            "conspo/score_gap": 0.01 * step,
            "conspo/p_pos": 0.5,
            "response/length_pos": 30.0,
            "response/length_neg": 41.0,
            "note": "text",
        }
        if step % 4 == 0:
            row["eval/avg@4"] = 0.1 * step
        rows.append(row)
    return rows


def test_default_panels_skip_missing_metrics(tmp_path):
    rows = conspo_rows()
    panels = dict(_resolve_panels(rows, None))
    assert panels == {
        "train reward / accuracy": ["reward/mean"],
        "held-out accuracy": ["eval/avg@4"],
        "ConSPO score gap (s+ - s-)": ["conspo/score_gap"],
        "ConSPO P+ (positive's softmax mass)": ["conspo/p_pos"],
        "response length (tokens)": ["response/length_pos", "response/length_neg"],
    }  # no margin, no entropy in the file: no empty panels
    out = plot_training_curves(write_rows(tmp_path / "metrics.jsonl", rows), tmp_path / "sub" / "curves.png")
    assert out == tmp_path / "sub" / "curves.png"
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_explicit_keys_and_no_match(tmp_path):
    rows = conspo_rows()
    assert _resolve_panels(rows, ["conspo/p_pos", ["reward/mean", "eval/*"], "missing"]) == [
        ("conspo/p_pos", ["conspo/p_pos"]),
        ("reward/mean, eval/*", ["reward/mean", "eval/avg@4"]),
    ]
    path = write_rows(tmp_path / "m.jsonl", rows)
    with pytest.raises(ValueError, match="none of the requested metrics.*reward/mean"):
        plot_training_curves(path, tmp_path / "x.png", keys=["nope"])


def seed_rows(values, steps=(10, 20)):
    return [{"step": s, "eval/avg@4": v} for s, v in zip(steps, values)]


def test_compare_mean_and_band_over_seeds(tmp_path):
    seeds = [seed_rows([0.2, 0.4]), seed_rows([0.4, 0.6]), seed_rows([0.3, None])]
    steps, mean, low, high = _mean_band(seeds, "eval/avg@4", "std")
    assert steps.tolist() == [10]  # the only step every seed logged
    assert mean[0] == pytest.approx(0.3)
    assert high[0] - mean[0] == pytest.approx(np.std([0.2, 0.4, 0.3], ddof=1))
    steps, mean, low, high = _mean_band(seeds[:2], "eval/avg@4", "minmax")
    assert steps.tolist() == [10, 20]
    assert (
        mean.tolist() == pytest.approx([0.3, 0.5])
        and low.tolist() == [0.2, 0.4]
        and high.tolist() == [0.4, 0.6]
    )

    out = plot_compare(
        {"conspo": seeds[:2], "grpo": [seed_rows([0.1, 0.2])], "cispo": [[{"step": 1, "other": 1.0}]]},
        tmp_path / "compare.png",
        key="eval/avg@4",
    )
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_compare_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="band"):
        plot_compare({"a": [seed_rows([0.1, 0.2])]}, tmp_path / "c.png", key="eval/avg@4", band="iqr")
    with pytest.raises(ValueError, match="no run logged 'reward/mean'"):
        plot_compare({"a": [seed_rows([0.1, 0.2])]}, tmp_path / "c.png", key="reward/mean")
