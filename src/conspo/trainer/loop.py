"""The RLVR run: setup, the step schedule, evaluation, checkpoints, signals, the run card.

One step (generate -> verify -> group -> credit -> update) is :func:`conspo.trainer.step.run_step`; the
:class:`Trainer` holds what it works on (model, optimizer, data order, reward function, process group) and
calls it ``cfg.steps`` times, evaluating and checkpointing in between. What the run leaves out, on purpose: no
value network, no reward model, no rollout/training overlap (generation and update alternate on the same
weights), and no importance correction unless the objective uses ratios AND a rollout batch feeds more than
one optimizer step. Progress lambda = step / steps drives the margin schedule.

Why one file of about 580 lines: the ``Trainer``'s state (model, optimizer, data cursor, evaluation history,
run-folder lock, signals) is shared by setup, evaluation, checkpoints and the run loop; the step is in
``step.py``, the builders in ``setup.py``.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conspo.config import config_to_dict, dump_yaml
from conspo.objectives import RolloutBatch
from conspo.rewards import RewardFunction, build_reward_fn
from conspo.trainer.config import TESTBED, TrainConfig
from conspo.trainer.distributed import Distributed
from conspo.trainer.plan import check_context
from conspo.trainer.rollout_engine import close_rollout_engine, rollout_generator
from conspo.trainer.rows import Rows
from conspo.trainer.run_folder import (
    RunFinished,
    RunFolderError,
    RunFolderLock,
    clear_previous_run,
    finished_summary,
    previous_run,
)
from conspo.trainer.setup import (
    build_optimizer,
    load_policy,
    load_reference,
    load_run_problems,
    prompt_template,
    resolve_run_dir,
    warn_train_eval_overlap,
)
from conspo.trainer.step import PhaseTimer, generate, rollout_batch, run_step, step_seed, update, verify

__all__ = ["PhaseTimer", "TrainResult", "Trainer", "train"]

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a finished (or stopped) run leaves behind."""

    run_dir: Path
    steps_done: int
    eval_before: float | None = None
    eval_after: float | None = None
    best_eval: float | None = None
    best_step: int | None = None
    final_dir: Path | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_by: str | None = None
    """``"SIGINT"`` / ``"SIGTERM"`` when a signal stopped the run early (a checkpoint was saved first)."""
    checkpoint: Path | None = None
    """The checkpoint this invocation saved last, if any."""
    already_finished: bool = False
    """``--resume`` found a finished run and changed nothing (the numbers come from its run card)."""

    @classmethod
    def from_run_card(cls, run_dir: Path, summary: dict[str, Any]) -> TrainResult:
        final = run_dir / "final"
        return cls(
            run_dir=run_dir,
            steps_done=int(summary.get("steps") or 0),
            eval_before=summary.get("eval_before"),
            eval_after=summary.get("eval_after"),
            best_eval=summary.get("best_eval"),
            best_step=summary.get("best_step"),
            final_dir=final if final.is_dir() else None,
            already_finished=True,
        )


class NoCheckpointError(RunFolderError, FileNotFoundError):
    """``--resume`` but the run folder holds no complete checkpoint."""


class _StopSignals:
    """SIGINT / SIGTERM ask the loop to stop after the current step; a second one aborts at once.

    Installed only in the main thread (Python delivers signals there); the previous handlers come back on exit.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.requested is not None:
            self._restore()
            raise KeyboardInterrupt(f"second {name}: aborted")
        self.requested = name
        print(
            f"\n[conspo] {name}: stopping after this step and saving a checkpoint (again to abort now)",
            file=sys.stderr,
            flush=True,
        )

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def __enter__(self) -> _StopSignals:
        if self.enabled:
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class Trainer:
    """Holds the model, optimizer, data and reward function of one run; ``run()`` trains it.

    Use :func:`train` unless you need the pieces (tests call ``step()`` directly). ``reward_fn`` is built
    from ``cfg.reward`` once (its verifier pool starts on first use); ``run()`` closes it at the end, and
    :meth:`close` does when only ``step()`` was used.
    """

    fuse_credit_forward: bool = True
    """Take the credit from the gradient forward when one micro-batch holds the whole mini-batch (exact: same
    parameters). False forces the separate no-grad credit forward (for tests and benchmarks)."""

    handle_signals: bool = True
    """``run()`` turns SIGINT / SIGTERM into "stop after this step, with a checkpoint" (main thread only)."""

    def __init__(
        self, cfg: TrainConfig, *, resume: bool | str | Path = False, overwrite: bool = False
    ) -> None:
        """Raises :class:`~conspo.trainer.run_folder.RunFinished` when ``resume`` names a finished run, and
        :class:`~conspo.trainer.run_folder.RunFolderError` (before any model loads) when the folder is in use,
        holds another run (a new run needs ``overwrite=True`` there) or has nothing to resume."""
        self.cfg = cfg
        self.dist = Distributed(cfg.device)
        cfg.validate(self.dist.world_size)  # before any model loads
        if resume and overwrite:
            raise RunFolderError(
                "--resume and --overwrite contradict each other: continue the run, or restart it"
            )
        if cfg.num_threads is not None:
            torch.set_num_threads(cfg.num_threads)
        elif cfg.model.name_or_path == TESTBED and self.dist.device.type == "cpu":
            torch.set_num_threads(1)
        _seed_everything(cfg.seed)
        self.device = self.dist.device
        self.objective = cfg.build_objective()
        # Read and validate the problems before the run folder and any model (ConfigError naming data.*).
        self.train_problems, self.eval_problems = load_run_problems(cfg)
        self.run_dir = resolve_run_dir(cfg, self.dist, resume)
        self.overwrite = overwrite
        self._lock = RunFolderLock(self.run_dir)
        self._check_run_folder(resume)  # before any model loads
        self.model, self.tokenizer, self.model_path = load_policy(cfg, self.dist)
        self.pad_id = int(
            self.tokenizer.pad_token_id
            if self.tokenizer.pad_token_id is not None
            else self.tokenizer.eos_token_id
        )
        # Prompt + completion must fit the model's positions, else generation runs on into garbage (ConfigError).
        from conspo.eval.models import context_length

        self.context = check_context(
            cfg, context_length(self.model.config), self.tokenizer, self.train_problems, self.eval_problems
        )
        self.eval_overlap = warn_train_eval_overlap(
            self.train_problems, self.eval_problems, self.dist.is_main
        )
        self.ref_model = (
            load_reference(cfg, self.model, self.device)
            if getattr(self.objective, "needs_ref_logps", False)
            else None
        )
        self.optimizer, self.scheduler = build_optimizer(self.model, cfg.optim, cfg.optimizer_steps)
        self.autocast = torch.bfloat16 if (cfg.optim.bf16 and self.device.type == "cuda") else None
        self.step_index = 0  # RL steps done
        self.cursor = 0  # prompts consumed from the (epoch-shuffled) training order
        self.template = prompt_template(cfg)
        self.eval_history: list[dict[str, float]] = []
        self.best_eval: float | None = None
        self.best_step: int | None = None
        self.eval_before: float | None = None
        self._order_cache: dict[int, list[int]] = {}
        self.reward_fn: RewardFunction = build_reward_fn(cfg.reward)
        self.metrics_logger = None
        self._last_save = time.monotonic()  # checkpoint.every_minutes counts from here (and run()'s start)
        self.resumed = bool(resume)
        if resume:
            self._resume()
        else:
            self.dist.broadcast_parameters(self.model)

    def _check_run_folder(self, resume: bool | str | Path) -> None:
        """Fail early, before the model loads: folder in use, a finished run to resume, nothing to resume,
        or a new run into a folder that holds one (``run()`` checks again under the lock)."""
        from conspo.trainer.checkpoint import latest_checkpoint

        if self.dist.is_main:  # the other processes of a run share the folder on purpose
            RunFolderLock.check_free(self.run_dir)
        if resume:
            summary = finished_summary(self.run_dir)
            if summary is not None and int(summary.get("steps") or 0) >= self.cfg.steps:
                raise RunFinished(self.run_dir, summary)
            if latest_checkpoint(self.run_dir) is None:
                there = previous_run(self.run_dir)
                what = f"it holds {there}" if there else "the folder is empty or missing"
                raise NoCheckpointError(
                    f"--resume: no checkpoint under {self.run_dir} ({what}), so there is nothing to "
                    "continue from; start the run again with --overwrite"
                )
        elif not self.overwrite:
            self._refuse_previous_run()

    def _refuse_previous_run(self) -> None:
        found = previous_run(self.run_dir)
        if found:
            raise RunFolderError(
                f"{self.run_dir} already holds a run ({found}); continue it with --resume, start it again "
                "with --overwrite (deletes what that run wrote), or choose another run_name"
            )

    def _claim_run_folder(self) -> None:
        """Main process: lock the folder for this run; then (new run) clear it under --overwrite, or refuse a
        folder another run filled since ``__init__`` looked."""
        if not self.dist.is_main:
            return
        self._lock.acquire()
        try:
            if not self.resumed:
                if self.overwrite:
                    removed = clear_previous_run(self.run_dir)
                    if removed:
                        logger.warning("--overwrite: removed %s from %s", ", ".join(removed), self.run_dir)
                else:
                    self._refuse_previous_run()
        except BaseException:
            self._lock.release()
            raise

    # -- data order -----------------------------------------------------------------------------------
    def _prompt_ids(self, start: int, count: int) -> list[int]:
        """Indices of training problems ``start .. start+count`` in the seeded per-epoch order."""
        n = len(self.train_problems)
        out = []
        for pos in range(start, start + count):
            epoch, i = divmod(pos, n)
            if epoch not in self._order_cache:
                order = list(range(n))
                if self.cfg.data.shuffle:
                    random.Random(self.cfg.seed * 7919 + epoch).shuffle(order)
                self._order_cache = {epoch: order}
            out.append(self._order_cache[epoch][i])
        return out

    # -- the step (conspo.trainer.step: generate -> verify -> group -> credit -> update) -----------------
    def step(self) -> dict[str, float]:
        """One RL step; returns the step's metrics (reduced over processes). See :func:`run_step`."""
        return run_step(self)

    def _update(self, rows: Rows, lam: float, timer: PhaseTimer) -> dict[str, float]:
        """Credit and update per mini-batch (:func:`conspo.trainer.step.update`); a method so tests can wrap it."""
        return update(self, rows, lam, timer)

    def _sample_round(self, step: int, attempt: int, timer: PhaseTimer) -> tuple[Rows, dict[str, float]]:
        """One generate + verify round of this process (what dynamic sampling repeats)."""
        with timer("generate"):
            sampled, metrics = generate(self, step, attempt)
        with timer("verify"):
            rows, _ = verify(self, sampled)
        return rows, metrics

    def _rollout_batch(self, rows: Rows, token_logps: torch.Tensor, mask: torch.Tensor) -> RolloutBatch:
        return rollout_batch(self, rows, token_logps, mask)

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on GPU when optim.bf16 (sampling and scoring use the same precision)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast)

    # -- evaluation -----------------------------------------------------------------------------------
    def evaluate(self, problems: list[Any] | None = None) -> dict[str, float]:
        """avg@k and pass@k on held-out problems (conspo.eval); each process takes a share, sums are reduced."""
        from conspo.eval import evaluate_problems
        from conspo.rollout import SamplingParams

        cfg, dist = self.cfg, self.dist
        problems = self.eval_problems if problems is None else problems
        mine = problems[dist.rank :: dist.world_size]
        k = cfg.eval.samples
        sums = {"avg": torch.tensor(0.0), "pass": torch.tensor(0.0), "n": torch.tensor(float(len(mine)))}
        if mine:
            params = SamplingParams(
                temperature=cfg.eval.temperature,
                top_p=cfg.eval.top_p,
                max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens,
                seed=step_seed(cfg.seed, 0, dist.rank, salt=10_000),  # the same draws at every evaluation
            )
            # vllm: the run's engine, shared with the rollouts
            generator = rollout_generator(self, batch_size=cfg.rollout.batch_size or 256)
            with self._autocast():
                result = evaluate_problems(
                    generator,
                    mine,
                    self.reward_fn.verifier,  # correctness only: held-out accuracy is never shaped
                    n=k,
                    params=params,
                    ks=sorted({1, k}),
                    template=self.template,
                    tokenizer=self.tokenizer,
                    benchmark="heldout",
                )
            sums["avg"] = torch.tensor(result.metrics[f"avg@{k}"] * len(mine))
            sums["pass"] = torch.tensor(result.metrics[f"pass@{k}"] * len(mine))
        s = dist.sum_dict(sums)
        n = max(float(s["n"]), 1.0)
        acc = float(s["avg"]) / n
        return {f"eval/avg@{k}": acc, f"eval/pass@{k}": float(s["pass"]) / n, "eval/accuracy": acc}

    # -- checkpoints ----------------------------------------------------------------------------------
    def _data_state(self) -> dict[str, Any]:
        return {"cursor": self.cursor}

    def _extra_state(self, best: bool = False) -> dict[str, Any]:
        return {
            "best": best,
            "best_eval": self.best_eval,
            "best_step": self.best_step,
            "eval_before": self.eval_before,
            "eval_history": self.eval_history,
        }

    def save_checkpoint(self) -> Path:
        from conspo.trainer.checkpoint import save_checkpoint

        self._last_save = time.monotonic()

        path = save_checkpoint(
            self.run_dir,
            step=self.step_index,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            data_state=self._data_state(),
            extra=self._extra_state(),
            keep_last=self.cfg.checkpoint.keep_last,
            is_main_process=self.dist.is_main,
        )
        self.dist.barrier()
        return path

    def _resume(self) -> None:
        from conspo.trainer.checkpoint import latest_checkpoint, load_checkpoint

        path = latest_checkpoint(self.run_dir)
        if path is None:
            raise NoCheckpointError(f"--resume: no checkpoint under {self.run_dir}")
        state = load_checkpoint(
            path,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            restore_rng=self.dist.is_main,
        )
        self.step_index = state.step
        self.cursor = int(state.data_state.get("cursor", 0))
        extra = state.extra
        self.best_eval, self.best_step = extra.get("best_eval"), extra.get("best_step")
        self.eval_before = extra.get("eval_before")
        self.eval_history = list(extra.get("eval_history", []))
        logger.info("resumed from %s at step %d", path, state.step)

    def save_pretrained(self, folder: Path) -> None:
        if self.dist.is_main:
            folder.mkdir(parents=True, exist_ok=True)
            self.model.save_pretrained(folder, safe_serialization=True)
            self.tokenizer.save_pretrained(folder)
        self.dist.barrier()

    def save_merged(self, adapter_dir: Path) -> Path:
        """``adapter_dir/merged``: the base model with the adapter saved in ``adapter_dir`` merged in
        (``checkpoint.merge_lora``; plain transformers weights, no peft needed to load them)."""
        from conspo.trainer.lora import save_merged

        out = adapter_dir / "merged"
        if self.dist.is_main:
            dtype = next(self.model.get_base_model().parameters()).dtype
            save_merged(
                adapter_dir,
                out,
                base=self.model_path,
                dtype=dtype,
                trust_remote_code=self.cfg.model.trust_remote_code,
            )
        self.dist.barrier()
        return out

    # -- the loop -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the reward function's verifier processes and unlock the run folder (``run()`` does both)."""
        self.reward_fn.close()
        close_rollout_engine(self)
        self._lock.release()

    def _checkpoint_due(self) -> bool:
        """``checkpoint.every_minutes`` have passed since the last save (every process agrees)."""
        minutes = self.cfg.checkpoint.every_minutes
        due = minutes is not None and time.monotonic() - self._last_save >= 60.0 * minutes
        return self.dist.all_min(int(due)) == 1 if self.dist.enabled else due

    def _stop_requested(self, stop: _StopSignals) -> bool:
        """A signal asked this process (or any process of the run) to stop."""
        if not self.dist.enabled:
            return stop.requested is not None
        return self.dist.all_min(int(stop.requested is None)) == 0

    def run(self) -> TrainResult:
        try:
            return self._run()
        finally:
            close_rollout_engine(self)
            self._lock.release()

    def _run(self) -> TrainResult:
        from conspo.trainer.logging import MetricsLogger, TrainProgress

        cfg, dist = self.cfg, self.dist
        self._claim_run_folder()
        if dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "config.yaml").write_text(dump_yaml(cfg))
        dist.barrier()
        self._last_save = time.monotonic()
        self.metrics_logger = MetricsLogger(
            self.run_dir,
            jsonl=cfg.logging.jsonl,
            tensorboard=cfg.logging.tensorboard,
            wandb={"project": cfg.logging.wandb_project} if cfg.logging.wandb else False,
            config=config_to_dict(cfg),
            enabled=dist.is_main,
            resume_step=self.step_index if self.resumed else None,
        )
        end = cfg.steps if cfg.stop_after is None else min(cfg.steps, self.step_index + cfg.stop_after)
        result = TrainResult(run_dir=self.run_dir, steps_done=self.step_index)
        stop = _StopSignals(self.handle_signals)
        try:
            with stop, self.reward_fn:  # one reward function (and verifier pool) per run, closed at the end
                if self.eval_problems and cfg.eval.at_start and self.eval_before is None:
                    ev = self.evaluate()
                    self.eval_before = ev["eval/accuracy"]
                    self._record_eval(0, ev)
                    self.metrics_logger.log(0, ev)
                with TrainProgress(
                    cfg.steps, enabled=cfg.logging.progress and dist.is_main, start_step=self.step_index
                ) as progress:
                    while self.step_index < end:
                        metrics = self.step()
                        step = self.step_index
                        every = cfg.eval.every
                        is_last = step >= cfg.steps
                        if self.eval_problems and ((every and step % every == 0) or is_last):
                            ev = self.evaluate()
                            metrics.update(ev)
                            self._record_eval(step, ev)
                            if is_last:
                                result.eval_after = ev["eval/accuracy"]
                        self.metrics_logger.log(step, metrics)
                        result.history.append(metrics)
                        progress.update(step, metrics)
                        if self._stop_requested(stop):
                            result.stopped_by = stop.requested or "a signal on another process"
                            break
                        if step < end and (
                            (cfg.checkpoint.every and step % cfg.checkpoint.every == 0)
                            or self._checkpoint_due()
                        ):
                            result.checkpoint = self.save_checkpoint()
                finished = self.step_index >= cfg.steps
                if finished:
                    result.stopped_by = None  # a signal during the last step: the run ended anyway
        finally:
            if self.metrics_logger is not None:
                self.metrics_logger.close()
        result.steps_done = self.step_index
        if not finished:
            result.checkpoint = self.save_checkpoint()  # stop_after / a signal: --resume continues from here
        else:
            if cfg.checkpoint.every:
                result.checkpoint = self.save_checkpoint()
            if cfg.checkpoint.save_final:
                result.final_dir = self.run_dir / "final"
                self.save_pretrained(result.final_dir)
                if cfg.checkpoint.merge_lora:  # final/ holds the adapter; final/merged the merged model
                    self.save_merged(result.final_dir)
            if dist.is_main:
                self._write_run_card(result)
                if cfg.logging.plot and cfg.logging.jsonl:
                    self._plot()
        result.eval_before, result.best_eval, result.best_step = (
            self.eval_before,
            self.best_eval,
            self.best_step,
        )
        return result

    def _record_eval(self, step: int, ev: dict[str, float]) -> None:
        acc = ev["eval/accuracy"]
        self.eval_history.append({"step": step, **ev})
        if step > 0 and (self.best_eval is None or acc > self.best_eval):
            self.best_eval, self.best_step = acc, step
            if self.cfg.checkpoint.save_best:
                self.save_pretrained(self.run_dir / "best")

    def _plot(self) -> None:
        try:
            from conspo.trainer.plots import plot_training_curves

            plot_training_curves(self.run_dir / "metrics.jsonl", self.run_dir / "curves.png")
        except Exception as e:  # a plot must never fail a finished run
            logger.warning("could not plot training curves: %s", e)

    def _write_run_card(self, result: TrainResult) -> None:
        from conspo.trainer.run_card import write_run_card

        history = result.history
        summary = {
            "objective": self.cfg.objective.name,
            "model": self.model_path,
            "steps": self.step_index,
            "eval_before": self.eval_before,
            "eval_after": result.eval_after,
            "best_eval": self.best_eval,
            "best_step": self.best_step,
            "final_reward_accuracy": history[-1].get("reward/accuracy") if history else None,
            "seconds_per_step": float(np.mean([m["time/step"] for m in history])) if history else None,
            "num_processes": self.dist.world_size,
        }
        write_run_card(self.run_dir, self.cfg, summary, self.eval_history)


def train(cfg: TrainConfig, *, resume: bool | str | Path = False, overwrite: bool = False) -> TrainResult:
    """Train with ``cfg`` (or continue the run in ``resume``) and return what it produced.

    ``resume`` on a finished run changes nothing and returns its run card's numbers (``already_finished``);
    a new run into a folder that holds one needs ``overwrite=True`` (which deletes what that run wrote).
    """
    try:
        trainer = Trainer(cfg, resume=resume, overwrite=overwrite)
    except RunFinished as done:
        return TrainResult.from_run_card(done.run_dir, done.summary)
    return trainer.run()
