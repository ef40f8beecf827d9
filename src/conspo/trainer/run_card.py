"""The run card written next to the final model: ``run_card.json`` and a ``README.md``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from conspo.config import config_to_dict, dump_yaml

__all__ = ["write_run_card"]


def write_run_card(run_dir: Path, cfg: Any, summary: dict[str, Any], eval_history: list[dict]) -> None:
    """``run_card.json`` (summary, resolved config, evaluation history) and a human-readable README.md."""
    card = {"summary": summary, "config": config_to_dict(cfg), "eval_history": eval_history}
    (run_dir / "run_card.json").write_text(json.dumps(card, indent=2, default=_json_default) + "\n")
    lines = [
        f"# conspo run: {run_dir.name}",
        "",
        f"Trained `{summary.get('model')}` with `{cfg.objective.name}` for {summary.get('steps')} steps "
        f"({cfg.batch.prompts_per_step} prompts x G={cfg.batch.group_size} per step).",
        "",
        "| metric | value |",
        "|---|---|",
        *(f"| {k} | {_fmt(v)} |" for k, v in summary.items()),
        "",
        "Files: `final/` (save_pretrained, safetensors + tokenizer), `best/` (best held-out accuracy), "
        "`metrics.jsonl`, `curves.png`, `config.yaml` (resolved config; rerun with "
        "`conspo train --config config.yaml`).",
        "",
        "## Resolved config",
        "",
        "```yaml",
        dump_yaml(cfg).rstrip(),
        "```",
        "",
    ]
    (run_dir / "README.md").write_text("\n".join(lines))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return "-" if v is None else str(v)


def _json_default(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, tuple):
        return list(v)
    raise TypeError(f"not JSON serializable: {type(v).__name__}")
