"""Where training metrics go: JSON Lines, TensorBoard, Weights & Biases, and a live progress line.

```python
with MetricsLogger(run_dir, config=asdict(cfg), resume_step=state.step) as metrics, \\
        TrainProgress(total_steps, start_step=state.step, enabled=is_main) as progress:
    for step in range(state.step + 1, total_steps + 1):
        row = train_step(...)                       # dict[str, float]
        metrics.log(step, row)
        progress.update(step, row)
rows = read_metrics(run_dir / "metrics.jsonl")      # list[dict], one per logged step
```

``metrics.jsonl`` holds one JSON object per `MetricsLogger.log` call: ``{"step": int, "timestamp": float,
<metric>: value, ...}``. Non-finite floats (NaN, inf) are written as ``null`` so the file stays strict JSON.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import warnings
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["METRICS_FILE", "MetricsLogger", "TrainProgress", "metric_series", "read_metrics"]

METRICS_FILE = "metrics.jsonl"
"""Name of the JSON Lines metrics file inside the run folder."""

TENSORBOARD_DIR = "tb"
"""TensorBoard event files go to ``run_dir/tb``."""


def _scalar(value: Any) -> Any:
    """A JSON-ready scalar: tensors and numpy numbers become Python numbers, non-finite floats None."""
    if hasattr(value, "item") and callable(value.item):  # torch tensor (one element) or numpy scalar
        value = value.item()
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (int, float, str)):
        return value
    raise TypeError(
        f"metric values must be numbers, strings or one-element tensors; got {type(value).__name__}"
    )


def metric_series(rows: Sequence[Mapping], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of one metric over ``metrics.jsonl`` rows, by step, finite numbers only.

    The last value logged at a step wins (a resumed run may repeat one). Used by the training curves and by
    ``conspo compare``'s tables and plots.
    """
    by_step = {
        r["step"]: float(r[key])
        for r in rows
        if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) and math.isfinite(r[key])
    }
    steps = sorted(by_step)
    return np.array(steps, dtype=float), np.array([by_step[s] for s in steps], dtype=float)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a metrics JSON Lines file (or of ``<run_dir>/metrics.jsonl`` when given a folder).

    A cut-short last line (a run killed mid-write) is skipped with a warning; a malformed line elsewhere
    raises ValueError naming the file and line.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics file")
    lines = path.read_text().splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or "step" not in row:
                raise ValueError("not an object with a 'step' key")
        except ValueError as e:
            if number == len(lines):
                warnings.warn(f"{path}:{number}: skipping a cut-short last line", stacklevel=2)
                continue
            raise ValueError(f"{path}:{number}: malformed metrics line: {e}") from e
        rows.append(row)
    return rows


class MetricsLogger:
    """Log one row of scalar metrics per step to ``run_dir/metrics.jsonl``, TensorBoard and W&B.

    Args:
        run_dir: the run folder (created if missing).
        jsonl: append rows to ``run_dir/metrics.jsonl`` (flushed after every row).
        tensorboard: write event files to ``run_dir/tb`` with ``torch.utils.tensorboard.SummaryWriter``.
        wandb: False, True, or a dict of ``wandb.init`` keyword arguments (``project``, ``name``, ...).
            Asking for W&B without ``wandb`` installed raises ImportError at construction, before any compute.
        config: the resolved run configuration, sent to W&B and written to TensorBoard as text.
        enabled: False makes every method a no-op (use ``accelerator.is_main_process``).
        resume_step: when resuming from the checkpoint of this step, rows with a larger step (logged after
            the checkpoint by the killed run) are dropped from ``metrics.jsonl`` and TensorBoard, so the
            resumed run does not log them twice.
    """

    def __init__(
        self,
        run_dir: str | os.PathLike,
        *,
        jsonl: bool = True,
        tensorboard: bool = True,
        wandb: bool | dict = False,
        config: dict | None = None,
        enabled: bool = True,
        resume_step: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._file: IO[str] | None = None
        self._tb = None
        self._wandb_run = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if jsonl:
            self._file = self._open_jsonl(resume_step)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides events of the killed run past the resumed step.
            purge_step = resume_step + 1 if resume_step is not None else None
            self._tb = SummaryWriter(
                str(self.run_dir / TENSORBOARD_DIR), purge_step=purge_step, flush_secs=30
            )
            if config is not None and resume_step is None:
                text = json.dumps(config, indent=2, default=str)
                self._tb.add_text("config", "```\n" + text + "\n```", 0)
        if wandb:
            self._wandb_run = self._init_wandb(wandb, config, resume=resume_step is not None)

    @property
    def path(self) -> Path:
        """The JSON Lines file."""
        return self.run_dir / METRICS_FILE

    def _open_jsonl(self, resume_step: int | None) -> IO[str]:
        path = self.path
        if path.exists():
            text = path.read_text()
            lines = text.splitlines(keepends=True)
            if lines and not lines[-1].endswith("\n"):
                lines = lines[:-1]  # a row cut short by a kill
            if resume_step is not None:
                lines = [line for line in lines if _step_of(line, path) <= resume_step]
            kept = "".join(lines)
            if kept != text:
                tmp = path.with_suffix(".jsonl.tmp")
                tmp.write_text(kept)
                os.replace(tmp, path)
        return open(path, "a", encoding="utf-8")

    @staticmethod
    def _init_wandb(options: bool | dict, config: dict | None, *, resume: bool) -> Any:
        try:
            import wandb
        except ImportError as e:
            raise ImportError(
                "Weights & Biases logging was asked for (logging.wandb) but wandb is not installed; "
                "install it with `pip install 'conspo[wandb]'` or turn logging.wandb off"
            ) from e
        kwargs = dict(options) if isinstance(options, Mapping) else {}
        kwargs.setdefault("config", config)
        if resume:
            kwargs.setdefault("resume", "allow")
        return wandb.init(**kwargs)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record ``metrics`` (name -> number, string or one-element tensor) at ``step``."""
        if not self.enabled:
            return
        row: dict[str, Any] = {"step": int(step), "timestamp": round(time.time(), 3)}
        for name, value in metrics.items():
            if name in ("step", "timestamp"):
                raise ValueError(f"metric name {name!r} is reserved")
            row[name] = _scalar(value)
        if self._file is not None:
            self._file.write(json.dumps(row, allow_nan=False) + "\n")
            self._file.flush()
        numbers = {
            k: v for k, v in row.items() if k not in ("step", "timestamp") and isinstance(v, (int, float))
        }
        if self._tb is not None:
            for name, value in numbers.items():
                self._tb.add_scalar(name, value, int(step))
        if self._wandb_run is not None:
            self._wandb_run.log(numbers, step=int(step))

    def close(self) -> None:
        """Flush and close every sink; safe to call twice."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _step_of(line: str, path: Path) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: malformed metrics line {line.strip()[:80]!r}: {e}") from e


# The first of these keys present in a row is shown under the label; the trainer may pass its own map.
DEFAULT_PROGRESS_KEYS: dict[str, tuple[str, ...]] = {
    "reward": ("reward/mean", "reward", "train/reward"),
    "acc": ("reward/accuracy", "accuracy", "train/accuracy", "acc"),
    "eval": ("eval/avg@k", "eval/accuracy", "eval/acc"),
}


class TrainProgress:
    """A live progress bar (rich) with reward, accuracy, seconds per step and ETA.

    When the output is not a terminal (CI, ``nohup``, a log file) a plain line is printed instead on the first
    step, every ``print_every`` seconds and on the last step. ``enabled=False`` silences it completely (use it
    on non-main processes).

    Args:
        total_steps: the step the run ends at.
        enabled: False = no output at all.
        start_step: the step a resumed run starts after (the bar starts there; s/step counts only new steps).
        keys: label -> metric names to look for, first present wins (default `DEFAULT_PROGRESS_KEYS`).
        print_every: seconds between plain lines when not on a terminal.
        file: where output goes (default stderr, so stdout stays free for tables).
    """

    def __init__(
        self,
        total_steps: int,
        enabled: bool = True,
        start_step: int = 0,
        *,
        keys: Mapping[str, tuple[str, ...] | str] | None = None,
        print_every: float = 30.0,
        file: IO[str] | None = None,
    ) -> None:
        self.total_steps = int(total_steps)
        self.enabled = enabled
        self.start_step = int(start_step)
        self.keys = {
            k: (v,) if isinstance(v, str) else tuple(v) for k, v in (keys or DEFAULT_PROGRESS_KEYS).items()
        }
        self.print_every = print_every
        self.file = file if file is not None else sys.stderr
        self._progress = None
        self._task = None
        self._times: deque[tuple[int, float]] = deque(maxlen=11)  # (step, time) of the last updates
        self._last_print = -math.inf
        self._shown: dict[str, float] = {}

    def __enter__(self) -> TrainProgress:
        if not self.enabled:
            return self
        self._times.append((self.start_step, time.perf_counter()))
        isatty = getattr(self.file, "isatty", None)
        if callable(isatty) and isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[stats]}"),
                console=Console(file=self.file),
                transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                "train", total=self.total_steps, completed=self.start_step, stats=""
            )
        return self

    def seconds_per_step(self) -> float | None:
        """Mean wall-clock seconds per step over the last (up to) 10 updates; None before the first one."""
        if len(self._times) < 2:
            return None
        (s0, t0), (s1, t1) = self._times[0], self._times[-1]
        return (t1 - t0) / (s1 - s0) if s1 > s0 else None

    def describe(self, step: int, metrics: Mapping[str, Any]) -> str:
        """The status text: ``reward 0.412 | acc 0.375 | 2.31 s/step | ETA 0:00:41``."""
        for label, candidates in self.keys.items():
            for key in candidates:
                value = metrics.get(key)
                if value is not None:
                    value = _scalar(value)
                if isinstance(value, (int, float)):
                    self._shown[label] = float(value)
                    break
        parts = [f"{label} {value:.3g}" for label, value in self._shown.items()]
        sps = self.seconds_per_step()
        if sps is not None:
            remaining = max(self.total_steps - step, 0) * sps
            parts.append(f"{sps:.2f} s/step")
            parts.append(f"ETA {_hms(remaining)}")
        return " | ".join(parts)

    def update(self, step: int, metrics: Mapping[str, Any] | None = None) -> None:
        """Mark ``step`` done and show the latest values of ``metrics``."""
        if not self.enabled:
            return
        self._times.append((int(step), time.perf_counter()))
        stats = self.describe(step, metrics or {})
        if self._progress is not None:
            self._progress.update(self._task, completed=step, stats=stats)
            return
        now = time.monotonic()
        first = len(self._times) == 2 and self._times[0][0] == self.start_step
        if first or step >= self.total_steps or now - self._last_print >= self.print_every:
            self._last_print = now
            print(f"step {step}/{self.total_steps} | {stats}", file=self.file, flush=True)

    def close(self) -> None:
        """Stop the live display (idempotent)."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __exit__(self, *exc: object) -> None:
        self.close()


def _hms(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
