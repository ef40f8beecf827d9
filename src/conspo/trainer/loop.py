"""The RLVR training loop: generate -> verify -> group -> credit -> update, one step at a time.

What this loop leaves out, on purpose: no value network, no reward model, no rollout/training overlap
(generation and update alternate on the same weights), and no importance correction unless the
objective uses ratios AND a rollout batch feeds more than one optimizer step.

One step, in the order the code runs (each phase timed under its name in ``time/*``):

1. **generate**: P prompts (this process's share, whole groups), G completions each, seeded by
   (seed, step, rank) so a resumed run samples what the uninterrupted run would have.
2. **verify**: the run's reward function (``build_reward_fn(cfg.reward)``: the verifier pool, or a user's
   custom verifier, plus optional format reward / DAPO overlong penalty) scores the completions; the
   reward may be shaped, the label is always the verdict's ``correct``.
3. **group**: drop all-correct and all-wrong groups (``batch.filter_groups``); optionally sample more
   prompts until P valid groups (``batch.dynamic_sampling``). A step with no valid group anywhere is
   skipped and logged (``step/skipped = 1``).
4. **logps**: old log-probs only when ``objective.needs_old_logps`` and ``batch.mini_batches > 1``;
   reference log-probs only when ``objective.needs_ref_logps``.
5. **update**: per mini-batch of whole groups (one optimizer step each): the credit under the current
   parameters (``objective.credit``), its normalizer counts summed over processes, then
   ``objective.loss`` backpropagated micro-batch by micro-batch. When one micro-batch holds the whole
   mini-batch, the credit comes from the gradient forward's detached log-probs (one forward per
   optimizer step); otherwise from a separate no-grad forward first. The gradient is the coupled
   objective's gradient exactly (see docs/trainer.md).

Progress lambda = step / steps drives the margin schedule.
"""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from conspo.config import config_to_dict, dump_yaml
from conspo.objectives import RolloutBatch
from conspo.rewards import RewardFunction, build_reward_fn
from conspo.trainer.config import TESTBED, TrainConfig, lr_at
from conspo.trainer.distributed import Distributed
from conspo.trainer.plan import check_context
from conspo.trainer.rows import Rows, sequence_forward
from conspo.trainer.run_folder import (
    RunFinished,
    RunFolderError,
    RunFolderLock,
    clear_previous_run,
    finished_summary,
    previous_run,
)
from conspo.trainer.setup import (
    load_policy,
    load_reference,
    load_run_problems,
    prompt_template,
    resolve_run_dir,
    warn_train_eval_overlap,
)

__all__ = ["Trainer", "TrainResult", "train"]

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


class PhaseTimer:
    """Wall-clock seconds per named phase, summed over a step."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _step_seed(seed: int, step: int, rank: int, salt: int = 0) -> int:
    # Distinct, reproducible sampling seed per (run seed, step, process, purpose).
    return (seed * 1_000_003 + step * 1_009 + rank * 97 + salt) % 2**31


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
        decay, no_decay = [], []
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
        o = cfg.optim
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr,
            betas=tuple(o.betas),
            eps=o.eps,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_at(o, s, cfg.optimizer_steps)
        )
        self.autocast = torch.bfloat16 if (o.bf16 and self.device.type == "cuda") else None
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

    # -- the step -------------------------------------------------------------------------------------
    def _sample_round(self, step: int, attempt: int, timer: PhaseTimer) -> tuple[Rows, dict[str, float]]:
        """Generate and verify this process's share of P prompts x G completions (one round)."""
        from conspo.data import render_prompt
        from conspo.rollout import SamplingParams, make_generator

        cfg, dist = self.cfg, self.dist
        P, G = cfg.batch.prompts_per_step, cfg.batch.group_size
        local = P // dist.world_size
        start = self.cursor + dist.rank * local
        ids = self._prompt_ids(start, local)
        problems = [self.train_problems[i] for i in ids]
        prompts = [render_prompt(p.problem, self.tokenizer, self.template) for p in problems]
        params = SamplingParams(
            temperature=cfg.rollout.temperature,
            top_p=cfg.rollout.top_p,
            max_new_tokens=cfg.rollout.max_new_tokens,
            seed=_step_seed(cfg.seed, step, dist.rank, salt=attempt),
        )
        generator = make_generator(
            self.model,
            self.tokenizer,
            backend=cfg.rollout.backend,
            batch_size=cfg.rollout.batch_size or local * G,
        )
        with timer("generate"), self._autocast():
            rollouts = generator.generate(prompts, n=G, params=params)
        with timer("verify"):
            verdicts = self.reward_fn.score(
                [prompts[r.prompt_index] for r in rollouts],
                [r.text for r in rollouts],
                [problems[r.prompt_index].answer for r in rollouts],
                completion_lengths=[r.num_completion_tokens for r in rollouts],
            )
        rewards = [v.reward for v in verdicts]  # shaped (format reward, overlong penalty) when configured
        labels = [(1 if v.correct else 0) if v.valid else -1 for v in verdicts]  # never from the reward
        # Global group id: unique across steps, rounds and processes.
        base = self.cursor + dist.rank * local
        group_ids = [base + r.prompt_index for r in rollouts]
        rows = Rows.from_rollouts(rollouts, rewards, labels, group_ids, self.pad_id)
        self.cursor += P  # every process advances by the global count
        stats = {"gen_tokens": float(sum(r.num_completion_tokens for r in rollouts))}
        return rows, stats

    @staticmethod
    def _valid_groups(rows: Rows) -> torch.Tensor:
        """[B] bool: the row's group holds at least one positive and one negative."""
        gids, inverse = torch.unique(rows.group_ids, return_inverse=True)
        pos = torch.zeros(len(gids)).index_add_(0, inverse, (rows.labels == 1).float())
        neg = torch.zeros(len(gids)).index_add_(0, inverse, (rows.labels == 0).float())
        return ((pos > 0) & (neg > 0))[inverse]

    def _keep_groups(self, rows: Rows, limit: int | None = None) -> torch.Tensor:
        """Row indices kept for the update (whole groups, in sampling order)."""
        if not self.cfg.batch.filter_groups:
            return torch.arange(len(rows))
        valid = self._valid_groups(rows)
        if limit is not None:
            kept_groups = torch.unique_consecutive(rows.group_ids[valid])[:limit]
            valid &= torch.isin(rows.group_ids, kept_groups)
        return valid.nonzero().squeeze(-1)

    def step(self) -> dict[str, float]:
        """One RL step; returns the step's metrics (reduced over processes)."""
        cfg, dist = self.cfg, self.dist
        step = self.step_index
        lam = step / cfg.steps
        timer = PhaseTimer()
        t0 = time.perf_counter()
        G = cfg.batch.group_size
        local_prompts = cfg.batch.prompts_per_step // dist.world_size

        # 1-2. generate + verify (3. with dynamic sampling: more rounds until P valid groups)
        rounds, gen_tokens = [], 0.0
        for attempt in range(cfg.batch.max_sampling_tries if cfg.batch.dynamic_sampling else 1):
            rows, stats = self._sample_round(step, attempt, timer)
            rounds.append(rows)
            gen_tokens += stats["gen_tokens"]
            if not cfg.batch.dynamic_sampling:
                break
            have = sum(int(self._valid_groups(r).sum()) // G for r in rounds)
            if dist.all_min(int(have >= local_prompts)) == 1:
                break
        with timer("group"):
            sampled = rounds[0] if len(rounds) == 1 else Rows.concat(rounds, self.pad_id)
            limit = local_prompts if cfg.batch.dynamic_sampling else None
            keep = self._keep_groups(sampled, limit)
            rows = sampled.select(keep) if len(keep) else None
        metrics = self._rollout_metrics(sampled, keep, gen_tokens, timer)
        valid_global = metrics["groups/kept"]
        if valid_global == 0:
            logger.warning("step %d: every group is all-correct or all-wrong; update skipped", step)
            for _ in range(cfg.batch.mini_batches):
                self._step_scheduler()
            metrics["step/skipped"] = 1.0
        else:
            if rows is None:  # this process has nothing, others do: join with a zero-credit placeholder
                rows = self._placeholder(sampled)
            with timer("logps"):
                self._attach_old_and_ref_logps(rows)
            with timer("update"):
                metrics.update(self._update(rows, lam, timer))
            metrics["step/skipped"] = 0.0
        self.step_index += 1
        metrics["progress/lambda"] = lam
        metrics["optim/lr"] = self.scheduler.get_last_lr()[0]
        for name, sec in timer.seconds.items():
            metrics[f"time/{name}"] = sec
        metrics["time/step"] = time.perf_counter() - t0
        if timer.seconds.get("generate"):
            metrics["perf/gen_tokens_per_s"] = metrics["perf/gen_tokens"] / timer.seconds["generate"]
        if timer.seconds.get("update"):
            metrics["perf/train_tokens_per_s"] = (
                metrics.get("perf/train_tokens", 0.0) / timer.seconds["update"]
            )
        return metrics

    def _autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast on GPU when optim.bf16 (sampling and scoring use the same precision)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast)

    def _placeholder(self, sampled: Rows) -> Rows:
        first = sampled.group_ids[0]
        rows = sampled.select((sampled.group_ids == first).nonzero().squeeze(-1))
        rows.labels = torch.full_like(rows.labels, -1)  # excluded from credit and counts
        return rows

    def _rollout_metrics(
        self, sampled: Rows, keep: torch.Tensor, gen_tokens: float, timer: PhaseTimer
    ) -> dict:
        """Sums over this process, all-reduced, turned into means."""
        G = self.cfg.batch.group_size
        lengths = sampled.lengths.float()
        pos, neg = sampled.labels == 1, sampled.labels == 0
        valid_rows = self._valid_groups(sampled)
        gids, inverse = torch.unique(sampled.group_ids, return_inverse=True)
        n_pos = torch.zeros(len(gids)).index_add_(0, inverse, pos.float())
        n_all = torch.zeros(len(gids)).index_add_(0, inverse, torch.ones_like(lengths))
        all_pos = (n_pos == n_all).float().sum()
        all_neg = (n_pos == 0).float().sum()
        sums = {
            "rows": torch.tensor(float(len(sampled))),
            "groups": torch.tensor(float(len(gids))),
            "reward": sampled.rewards.sum(),
            "correct": pos.float().sum(),
            "truncated": sampled.truncated.float().sum(),
            "len": lengths.sum(),
            "len_pos": lengths[pos].sum(),
            "n_pos": pos.float().sum(),
            "len_neg": lengths[neg].sum(),
            "n_neg": neg.float().sum(),
            "valid_groups": valid_rows.float().sum() / G,
            "kept_groups": torch.tensor(
                float(len(torch.unique(sampled.group_ids[keep]))) if len(keep) else 0.0
            ),
            "all_pos": all_pos,
            "all_neg": all_neg,
            "gen_tokens": torch.tensor(gen_tokens),
        }
        s = {k: float(v) for k, v in self.dist.sum_dict(sums).items()}
        out = {
            "reward/mean": s["reward"] / s["rows"],
            "reward/accuracy": s["correct"] / s["rows"],
            "reward/truncated_frac": s["truncated"] / s["rows"],
            "groups/valid_frac": s["valid_groups"] / s["groups"],
            "groups/all_correct_frac": s["all_pos"] / s["groups"],
            "groups/all_wrong_frac": s["all_neg"] / s["groups"],
            "groups/kept": s["kept_groups"],
            "length/mean": s["len"] / s["rows"],
            "perf/gen_tokens": s["gen_tokens"],
        }
        # A mean over nothing is left out rather than logged as NaN.
        if s["n_pos"]:
            out["length/positive"] = s["len_pos"] / s["n_pos"]
        if s["n_neg"]:
            out["length/negative"] = s["len_neg"] / s["n_neg"]
        return out

    @torch.no_grad()
    def _forward_chunked(self, model: Any, rows: Rows, with_entropy: bool = False):
        """No-grad per-token log-probs (and entropy) of all rows, micro-batch by micro-batch, [B, T]."""
        chunk = self.cfg.batch.micro_batch_size or len(rows)
        T = rows.tokens.completion_ids.shape[1]
        logps = torch.zeros(len(rows), T, device=self.device)
        entropy = torch.zeros(len(rows), T, device=self.device) if with_entropy else None
        for start in range(0, len(rows), chunk):
            idx = torch.arange(start, min(start + chunk, len(rows)))
            part = rows.select(idx)
            lp, _, ent = sequence_forward(
                model,
                part.tokens,
                temperature=self.cfg.rollout.temperature,
                with_entropy=with_entropy,
                autocast_dtype=self.autocast,
            )
            logps[idx, : lp.shape[1]] = lp
            if with_entropy:
                entropy[idx, : ent.shape[1]] = ent
        return logps, rows.tokens.completion_mask.to(self.device), entropy

    def _attach_old_and_ref_logps(self, rows: Rows) -> None:
        if getattr(self.objective, "needs_old_logps", False) and self.cfg.batch.mini_batches > 1:
            rows.old_token_logps = self._forward_chunked(self.model, rows)[0]
        if self.ref_model is not None:
            rows.ref_token_logps = self._forward_chunked(self.ref_model, rows)[0]

    def _rollout_batch(self, rows: Rows, token_logps: torch.Tensor, mask: torch.Tensor) -> RolloutBatch:
        dev = self.device
        return RolloutBatch(
            token_logps=token_logps,
            mask=mask.to(dev),
            group_ids=rows.group_ids.to(dev),
            rewards=rows.rewards.to(dev),
            labels=rows.labels.to(dev),
            old_token_logps=None if rows.old_token_logps is None else rows.old_token_logps.to(dev),
            ref_token_logps=None if rows.ref_token_logps is None else rows.ref_token_logps.to(dev),
        )

    def _mini_batches(self, rows: Rows) -> list[torch.Tensor]:
        """Row indices of each mini-batch: whole groups, as even a split of the groups as possible."""
        k = self.cfg.batch.mini_batches
        groups = torch.unique_consecutive(rows.group_ids)
        parts = np.array_split(np.arange(len(groups)), k)
        out = []
        for part in parts:
            chosen = groups[torch.as_tensor(part, dtype=torch.long)]
            out.append(torch.isin(rows.group_ids, chosen).nonzero().squeeze(-1))
        return out

    def _step_scheduler(self) -> None:
        import warnings

        with warnings.catch_warnings():  # stepping the schedule of a skipped update is intended
            warnings.simplefilter("ignore", UserWarning)
            self.scheduler.step()

    def _update(self, rows: Rows, lam: float, timer: PhaseTimer) -> dict[str, float]:
        """Mini-batch updates over whole groups; returns the update's metrics."""
        cfg, dist = self.cfg, self.dist
        params = [p for p in self.model.parameters() if p.requires_grad]
        sums: dict[str, list[float]] = defaultdict(list)
        train_tokens = 0.0
        for mb_idx in self._mini_batches(rows):
            # A mini-batch empty here but not elsewhere still joins the collectives.
            empty = len(mb_idx) == 0
            mb = self._placeholder(rows) if empty else rows.select(mb_idx)
            if dist.all_min(int(empty)) == 1:  # empty on every process: nothing to update
                self._step_scheduler()
                continue
            self.optimizer.zero_grad(set_to_none=True)
            if cfg.batch.update_mode == "coupled":
                logps, mask, _ = sequence_forward(
                    self.model, mb.tokens, temperature=cfg.rollout.temperature, autocast_dtype=self.autocast
                )
                out = self.objective(self._rollout_batch(mb, logps, mask), progress=lam)
                out.loss.backward()
                obj_metrics = dict(out.metrics)
                train_tokens += float(mask.sum())
            else:
                chunk = cfg.batch.micro_batch_size or len(mb)
                if chunk >= len(mb) and self.fuse_credit_forward:
                    obj_metrics, tokens = self._fused_credit_and_loss(mb, lam, timer, sums)
                else:
                    obj_metrics, tokens = self._credit_then_micro_batches(mb, lam, timer, sums, chunk)
                train_tokens += tokens
            dist.sum_gradients(params)
            max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm is not None else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            self.optimizer.step()
            self._step_scheduler()
            sums["optim/grad_norm"].append(float(grad_norm))
            for k, v in obj_metrics.items():
                # The trainer reports group statistics of the whole sampled batch itself (before filtering).
                if k.startswith("groups/"):
                    continue
                if torch.is_tensor(v) and v.numel() == 1:
                    key = k if "/" in k else f"{cfg.objective.name}/{k}"
                    sums[key].append(float(v))
        self.optimizer.zero_grad(set_to_none=True)
        out_metrics: dict[str, float] = {}
        for k, vals in sums.items():
            if k.startswith("entropy_"):
                continue
            out_metrics[k] = sum(vals) / len(vals)
        # Mean over processes of the per-process means (objective diagnostics are batch-level).
        if dist.enabled and out_metrics:
            keys = sorted(out_metrics)
            red = dist.sum_dict({k: torch.tensor(out_metrics[k]) for k in keys})
            out_metrics = {k: float(v) / dist.world_size for k, v in red.items()}
        if sums.get("entropy_tokens"):
            ent = dist.sum_dict(
                {"s": torch.tensor(sum(sums["entropy_sum"])), "n": torch.tensor(sum(sums["entropy_tokens"]))}
            )
            out_metrics["entropy/mean"] = float(ent["s"]) / max(float(ent["n"]), 1.0)
        out_metrics["perf/train_tokens"] = float(dist.sum_dict({"t": torch.tensor(train_tokens)})["t"])
        return out_metrics

    def _credit(
        self, mb: Rows, logps: torch.Tensor, mask: torch.Tensor, entropy: torch.Tensor, lam: float, sums: dict
    ) -> tuple[Any, dict[str, torch.Tensor]]:
        """The objective's credit from detached log-probs under the current parameters, with global counts."""
        credit = self.objective.credit(self._rollout_batch(mb, logps, mask), progress=lam)
        normalizer = self.dist.sum_dict(dict(credit.normalizer))
        m = mask.float()
        sums["entropy_sum"].append(float((entropy * m).sum()))
        sums["entropy_tokens"].append(float(m.sum()))
        return credit, normalizer

    def _fused_credit_and_loss(
        self, mb: Rows, lam: float, timer: PhaseTimer, sums: dict
    ) -> tuple[dict[str, Any], float]:
        """One micro-batch holds the mini-batch: one forward with grad gives the credit (from its detached
        log-probs: the same parameters, so the same credit as a separate no-grad pass) and then the loss."""
        with timer("credit"):  # here: the shared forward and the credit
            lp, mask, entropy = sequence_forward(
                self.model,
                mb.tokens,
                temperature=self.cfg.rollout.temperature,
                with_entropy=True,
                autocast_dtype=self.autocast,
            )
            credit, normalizer = self._credit(mb, lp.detach(), mask, entropy, lam, sums)
        out = self.objective.loss(self._rollout_batch(mb, lp, mask), credit, normalizer=normalizer)
        if out.loss.requires_grad:
            out.loss.backward()
        metrics = dict(credit.metrics)
        metrics.update({k: torch.tensor(float(v)) for k, v in out.metrics.items()})
        return metrics, float(mask.sum())

    def _credit_then_micro_batches(
        self, mb: Rows, lam: float, timer: PhaseTimer, sums: dict, chunk: int
    ) -> tuple[dict[str, Any], float]:
        """Micro-batches split the mini-batch: a no-grad forward over all of it gives the credit, then a forward
        with grad and ``objective.loss`` per micro-batch (gradient accumulation)."""
        with timer("credit"):
            logps, mask, entropy = self._forward_chunked(self.model, mb, with_entropy=True)
            credit, normalizer = self._credit(mb, logps, mask, entropy, lam, sums)
        metrics = dict(credit.metrics)
        micro_metrics: dict[str, list[float]] = defaultdict(list)
        tokens = 0.0
        for start in range(0, len(mb), chunk):
            idx = torch.arange(start, min(start + chunk, len(mb)))
            micro = mb.select(idx)
            lp, mmask, _ = sequence_forward(
                self.model,
                micro.tokens,
                temperature=self.cfg.rollout.temperature,
                autocast_dtype=self.autocast,
            )
            out = self.objective.loss(
                self._rollout_batch(micro, lp, mmask),
                credit.select(idx.to(self.device)),
                normalizer=normalizer,
            )
            if out.loss.requires_grad:
                out.loss.backward()
            for k, v in out.metrics.items():  # per-micro-batch metrics: mean over micro-batches
                micro_metrics[k].append(float(v))
            tokens += float(mmask.sum())
        metrics.update({k: torch.tensor(sum(v) / len(v)) for k, v in micro_metrics.items()})
        return metrics, tokens

    # -- evaluation -----------------------------------------------------------------------------------
    def evaluate(self, problems: list[Any] | None = None) -> dict[str, float]:
        """avg@k and pass@k on held-out problems (conspo.eval); each process takes a share, sums are reduced."""
        from conspo.eval import evaluate_problems
        from conspo.rollout import SamplingParams, make_generator

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
                seed=_step_seed(cfg.seed, 0, dist.rank, salt=10_000),  # the same draws at every evaluation
            )
            generator = make_generator(
                self.model,
                self.tokenizer,
                backend=cfg.rollout.backend,
                batch_size=cfg.rollout.batch_size or 256,
            )
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

    # -- the loop -------------------------------------------------------------------------------------
    def close(self) -> None:
        """Stop the reward function's verifier processes and unlock the run folder (``run()`` does both)."""
        self.reward_fn.close()
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
