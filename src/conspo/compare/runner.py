"""Running the (objective, seed) grid of ``conspo compare``: one training run per cell, in parallel processes.

Every cell trains from the same starting policy with the same settings; only the objective and the seed
change, and the seed fixes the prompts and the sampling, so two objectives see the same prompts for one seed.
Each run goes to ``<out>/runs/<objective slug>/seed<k>/`` (``metrics.jsonl`` is the trainer's), and a
``result.json`` written when it ends (``"ok"`` or ``"failed"`` with the error) is what marks it done: a
compare that is interrupted and started again skips the runs that have one and reruns the others.

Processes are started with ``spawn`` (fork and torch's thread pools do not mix); each sets torch to
``cores // jobs`` threads (at least 1) so the runs do not fight over the cores. A run that raises is
reported and the others continue.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing
import os
import shutil
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conspo.compare.specs import slug

__all__ = ["RunResult", "RunSpec", "execute_runs", "read_result", "run_one"]

RESULT_FILE = "result.json"


@dataclass
class RunSpec:
    """One cell of the grid: an objective spec, a seed, and the resolved training config as a mapping."""

    objective: str
    seed: int
    run_dir: str
    config: dict[str, Any]
    num_threads: int = 1

    @property
    def label(self) -> str:
        return f"{self.objective} seed {self.seed}"


@dataclass
class RunResult:
    """What ``result.json`` holds for one run."""

    objective: str
    seed: int
    status: str  # "ok" | "failed"
    run_dir: str
    seconds: float
    error: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def run_dir_for(out: Path, objective: str, seed: int) -> Path:
    return out / "runs" / slug(objective) / f"seed{seed}"


def read_result(run_dir: str | Path) -> RunResult | None:
    """The saved result of a finished run, or None if it has not finished."""
    path = Path(run_dir) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return RunResult(**json.loads(path.read_text()))
    except (ValueError, TypeError):
        return None  # a torn or foreign file: the run is redone


def _write_result(result: RunResult) -> None:
    path = Path(result.run_dir) / RESULT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(result), indent=2) + "\n")
    os.replace(tmp, path)  # atomic: a result file is whole or absent


def run_one(spec: RunSpec) -> RunResult:
    """Train one cell (in this process) and write its ``result.json``; never raises for a failed run."""
    import torch
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(max(1, spec.num_threads))
    hf_logging.disable_progress_bar()  # N processes' "Loading weights" bars would bury the compare's lines
    start = time.perf_counter()
    run_dir = Path(spec.run_dir)
    try:
        from conspo.config import config_from_dict
        from conspo.trainer.config import TrainConfig
        from conspo.trainer.loop import train

        cfg = config_from_dict(TrainConfig, spec.config)
        cfg.output_dir, cfg.run_name = str(run_dir.parent), run_dir.name
        cfg.validate()
        trained = train(cfg)
        if trained.stopped_by is not None:  # Ctrl-C / SIGTERM stopped it early: not a finished cell
            raise KeyboardInterrupt(trained.stopped_by)
        times = [m["time/step"] for m in trained.history if "time/step" in m]
        summary = {
            "steps": trained.steps_done,
            "eval_before": trained.eval_before,
            "eval_after": trained.eval_after,
            "best_eval": trained.best_eval,
            "best_step": trained.best_step,
            "seconds_per_step": sum(times) / len(times) if times else None,
        }
        result = RunResult(
            spec.objective, spec.seed, "ok", str(run_dir), time.perf_counter() - start, summary=summary
        )
    except Exception as e:  # a failed run is reported, the others go on
        tb = traceback.format_exc(limit=6)
        result = RunResult(
            spec.objective,
            spec.seed,
            "failed",
            str(run_dir),
            time.perf_counter() - start,
            error=f"{type(e).__name__}: {e}\n{tb}",
        )
    _write_result(result)
    return result


def execute_runs(
    specs: Sequence[RunSpec],
    jobs: int,
    *,
    on_done: Callable[[RunResult, bool], None] | None = None,
) -> list[RunResult]:
    """Run every spec that has no saved result; returns all results (saved ones included), in spec order.

    ``jobs`` processes run at once (spawned); ``jobs=1`` runs in this process, one after another.
    ``on_done(result, cached)`` is called as each run finishes (``cached``: it was done before).
    """
    results: dict[int, RunResult] = {}
    todo: list[int] = []
    for i, spec in enumerate(specs):
        saved = read_result(spec.run_dir)
        if saved is not None and saved.status == "ok":
            results[i] = saved
            if on_done:
                on_done(saved, True)
        else:
            # A partial folder from an interrupted run: start it afresh (same seed, same result).
            shutil.rmtree(spec.run_dir, ignore_errors=True)
            todo.append(i)
    if jobs <= 1 or len(todo) <= 1:
        for i in todo:
            results[i] = run_one(specs[i])
            if on_done:
                on_done(results[i], False)
        return [results[i] for i in range(len(specs))]
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(jobs, len(todo)), mp_context=ctx) as pool:
        futures = {pool.submit(run_one, specs[i]): i for i in todo}
        for future in cf.as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except Exception as e:  # the worker process itself died (killed, out of memory)
                spec = specs[i]
                results[i] = RunResult(
                    spec.objective, spec.seed, "failed", spec.run_dir, 0.0, error=f"{type(e).__name__}: {e}"
                )
                _write_result(results[i])
            if on_done:
                on_done(results[i], False)
    return [results[i] for i in range(len(specs))]
