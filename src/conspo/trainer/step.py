"""One RL step as the paper's algorithm box: generate -> verify -> group -> credit -> update.

`run_step` reads top to bottom like the box; each phase is one function here that returns its outputs and its
metrics, and is timed as one flat phase of a `PhaseTimer` (no phase inside another), so the ``time/*`` keys
add up to ``time/step``.

1. **generate**: this process's share of the P prompts (whole groups), G completions each, seeded.
2. **verify**: the run's reward function scores them; the label is always the verdict's ``correct``. With
   ``batch.dynamic_sampling`` 1-2 run again, a visible loop in `run_step`, until every process has P valid groups.
3. **group**: keep the valid groups (validity from `conspo.objectives.group_index`); the sampled batch's stats.
4. **credit**: no-grad, at the current parameters: old / reference log-probs when needed, then per mini-batch
   the objective's credit with its counts summed over processes (`credit_pass`).
5. **update**: per mini-batch, ``objective.loss`` backpropagated micro-batch by micro-batch, one optimizer step.
   One path: `credit_pass` takes the credit from the gradient forward when one micro-batch holds the
   mini-batch, else from a no-grad forward first. ``batch.update_mode=coupled`` is a thin oracle path (the
   coupled objective on the whole mini-batch; the tests compare the decomposed update with it).

The functions take the `Trainer` (conspo.trainer.loop) as their context: its model, optimizer, config,
process group, reward function and data order. They hold no state of their own.
"""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from conspo.objectives import Credit, RolloutBatch, group_index, segment_sum
from conspo.trainer.phases import PHASES, PhaseTimer
from conspo.trainer.rollout_engine import sleep_rollout_engine, sync_rollout_engine
from conspo.trainer.rows import Rows, score_rows, sequence_forward

if TYPE_CHECKING:
    from conspo.rollout import Rollout
    from conspo.trainer.loop import Trainer

__all__ = [
    "PHASES",
    "PhaseTimer",
    "Sampled",
    "credit_pass",
    "generate",
    "group",
    "run_step",
    "update",
    "verify",
]

logger = logging.getLogger(__name__)

_TRAINER_GROUP_STATS = ("groups/valid_frac", "groups/num_valid")
"""Objective metrics the trainer reports itself, on the whole sampled batch (the objective sees kept rows)."""


def step_seed(seed: int, step: int, rank: int, salt: int = 0) -> int:
    """A distinct, reproducible sampling seed per (run seed, step, process, purpose)."""
    return (seed * 1_000_003 + step * 1_009 + rank * 97 + salt) % 2**31


# ---- 1. generate ----------------------------------------------------------------------------------------


@dataclass
class Sampled:
    """One round of generation on this process: the prompts, their problems and G rollouts per prompt."""

    problems: list[Any]
    prompts: list[str]
    rollouts: list[Rollout]
    first_group_id: int
    """Global id of this process's first prompt of the round (unique across steps, rounds and processes)."""


def generate(trainer: Trainer, step: int, attempt: int) -> tuple[Sampled, dict[str, float]]:
    """Phase 1: this process's P / world_size prompts, G completions each; advances the data cursor by P."""
    from conspo.data import render_prompt
    from conspo.rollout import SamplingParams
    from conspo.trainer.rollout_engine import logprob_mismatch, rollout_generator

    cfg, dist = trainer.cfg, trainer.dist
    P, G = cfg.batch.prompts_per_step, cfg.batch.group_size
    local = P // dist.world_size
    start = trainer.cursor + dist.rank * local
    problems = [trainer.train_problems[i] for i in trainer._prompt_ids(start, local)]
    prompts = [render_prompt(p.problem, trainer.tokenizer, trainer.template) for p in problems]
    params = SamplingParams(
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        max_new_tokens=cfg.rollout.max_new_tokens,
        seed=step_seed(cfg.seed, step, dist.rank, salt=attempt),
    )
    generator = rollout_generator(trainer, batch_size=cfg.rollout.batch_size or local * G)
    with trainer._autocast():
        rollouts = generator.generate(prompts, n=G, params=params)
    trainer.cursor += P  # every process advances by the global count
    metrics = {"perf/gen_tokens": float(sum(r.num_completion_tokens for r in rollouts))}
    sampler_logps = getattr(generator, "last_logprobs", None)  # vllm: the engine's own log-probs
    # The train/inference mismatch, a metric only: the update scores with the trainer's own forward.
    if sampler_logps:
        metrics["rollout/logprob_mismatch"] = logprob_mismatch(trainer, rollouts, sampler_logps)
    return Sampled(problems, prompts, rollouts, start), metrics


# ---- 2. verify ------------------------------------------------------------------------------------------


def verify(trainer: Trainer, sampled: Sampled) -> tuple[Rows, dict[str, float]]:
    """Phase 2: rewards and labels of one round's rollouts, as `Rows`.

    Reports nothing of its own: reward statistics are over the whole sampled batch, so `group` reports them.
    """
    rollouts = sampled.rollouts
    verdicts = trainer.reward_fn.score(
        [sampled.prompts[r.prompt_index] for r in rollouts],
        [r.text for r in rollouts],
        [sampled.problems[r.prompt_index].answer for r in rollouts],
        completion_lengths=[r.num_completion_tokens for r in rollouts],
    )
    rewards = [v.reward for v in verdicts]  # shaped (format reward, overlong penalty) when configured
    labels = [(1 if v.correct else 0) if v.valid else -1 for v in verdicts]  # never from the reward
    group_ids = [sampled.first_group_id + r.prompt_index for r in rollouts]
    return Rows.from_rollouts(rollouts, rewards, labels, group_ids, trainer.pad_id), {}


# ---- 3. group -------------------------------------------------------------------------------------------


def valid_rows(rows: Rows) -> torch.Tensor:
    """[B] bool: the row's group holds at least one positive and one negative (`objectives.group_index`)."""
    gi = group_index(rows.group_ids, rows.labels)
    return gi.valid[gi.inverse]


def _kept(trainer: Trainer, sampled: Rows, limit: int | None) -> torch.Tensor:
    """Row indices kept for the update (whole groups, in sampling order, at most `limit` groups)."""
    if not trainer.cfg.batch.filter_groups:
        return torch.arange(len(sampled))
    valid = valid_rows(sampled)
    if limit is not None:
        kept_groups = torch.unique_consecutive(sampled.group_ids[valid])[:limit]
        valid &= torch.isin(sampled.group_ids, kept_groups)
    return valid.nonzero().squeeze(-1)


def group(trainer: Trainer, rounds: list[Rows], gen_tokens: float) -> tuple[Rows | None, dict[str, float]]:
    """Phase 3: the rows of the kept groups (None when this process kept none) and the sampled batch's
    statistics (sums over this process, all-reduced, turned into means)."""
    cfg = trainer.cfg
    sampled = rounds[0] if len(rounds) == 1 else Rows.concat(rounds, trainer.pad_id)
    limit = cfg.batch.prompts_per_step // trainer.dist.world_size if cfg.batch.dynamic_sampling else None
    keep = _kept(trainer, sampled, limit)
    rows = sampled.select(keep) if len(keep) else None

    gi = group_index(sampled.group_ids, sampled.labels)
    lengths = sampled.lengths.float()
    pos, neg = sampled.labels == 1, sampled.labels == 0
    n_all = segment_sum(torch.ones_like(lengths), gi.inverse, gi.num_groups)
    sums = {
        "rows": torch.tensor(float(len(sampled))),
        "groups": torch.tensor(float(gi.num_groups)),
        "reward": sampled.rewards.sum(),
        "correct": pos.float().sum(),
        "truncated": sampled.truncated.float().sum(),
        "len": lengths.sum(),
        "len_pos": lengths[pos].sum(),
        "n_pos": pos.float().sum(),
        "len_neg": lengths[neg].sum(),
        "n_neg": neg.float().sum(),
        "valid_groups": gi.valid[gi.inverse].float().sum() / cfg.batch.group_size,
        "kept_groups": torch.tensor(float(len(torch.unique(sampled.group_ids[keep]))) if len(keep) else 0.0),
        "all_pos": (gi.num_pos == n_all).float().sum(),
        "all_neg": (gi.num_pos == 0).float().sum(),
        "gen_tokens": torch.tensor(gen_tokens),
    }
    s = {k: float(v) for k, v in trainer.dist.sum_dict(sums).items()}
    metrics = {
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
        metrics["length/positive"] = s["len_pos"] / s["n_pos"]
    if s["n_neg"]:
        metrics["length/negative"] = s["len_neg"] / s["n_neg"]
    if rows is None and metrics["groups/kept"] > 0:  # others have rows: join with a zero-credit placeholder
        rows = sampled.placeholder()
    return rows, metrics


# ---- 4. credit ------------------------------------------------------------------------------------------


def rollout_batch(
    trainer: Trainer, rows: Rows, token_logps: torch.Tensor, mask: torch.Tensor
) -> RolloutBatch:
    """The objective's view of `rows` with these per-token log-probs, on the trainer's device."""
    return rows.to_batch(token_logps, mask, trainer.device)


def _forward(trainer: Trainer, model: Any, rows: Rows, with_entropy: bool = False):
    return sequence_forward(
        model,
        rows.tokens,
        temperature=trainer.cfg.rollout.temperature,
        with_entropy=with_entropy,
        autocast_dtype=trainer.autocast,
    )


def forward_chunked(trainer: Trainer, model: Any, rows: Rows, with_entropy: bool = False):
    """No-grad per-token log-probs, mask (and entropy) of all rows, micro-batch by micro-batch, [B, T]."""
    return score_rows(
        model,
        rows,
        chunk=trainer.cfg.batch.micro_batch_size or len(rows),
        device=trainer.device,
        temperature=trainer.cfg.rollout.temperature,
        with_entropy=with_entropy,
        autocast_dtype=trainer.autocast,
    )


def sampling_logps(trainer: Trainer, rows: Rows) -> None:
    """Old log-probs (a ratio objective over several mini-batches) and reference log-probs (a KL term)."""
    if getattr(trainer.objective, "needs_old_logps", False) and trainer.cfg.batch.mini_batches > 1:
        rows.old_token_logps = forward_chunked(trainer, trainer.model, rows)[0]
    if trainer.ref_model is not None:
        rows.ref_token_logps = forward_chunked(trainer, trainer.ref_model, rows)[0]


@dataclass
class CreditPass:
    """The credit of one mini-batch and, when fused, the gradient forward it came from."""

    credit: Credit
    normalizer: dict[str, torch.Tensor]
    """The credit's counts summed over processes."""
    fused: tuple[torch.Tensor, torch.Tensor] | None
    """(token log-probs with grad, mask) of the whole mini-batch when its one micro-batch forward gave the
    credit; None when a no-grad forward did (the update then runs its own forward per micro-batch)."""


def credit_pass(trainer: Trainer, mb: Rows, lam: float) -> tuple[CreditPass, dict[str, float]]:
    """Phase 4 for one mini-batch: the objective's credit under the current parameters, with global counts.

    One micro-batch holds the mini-batch (and ``trainer.fuse_credit_forward``): the forward WITH grad gives
    the credit from its detached log-probs (the same parameters, so the same credit as a separate no-grad
    forward) and the update backpropagates through it. Otherwise a no-grad forward over the mini-batch first.
    Metrics: the credit's batch-level diagnostics and the entropy sums of the mini-batch's tokens.
    """
    chunk = trainer.cfg.batch.micro_batch_size or len(mb)
    if chunk >= len(mb) and trainer.fuse_credit_forward:
        lp, mask, entropy = _forward(trainer, trainer.model, mb, with_entropy=True)
        logps, fused = lp.detach(), (lp, mask)
    else:
        logps, mask, entropy = forward_chunked(trainer, trainer.model, mb, with_entropy=True)
        fused = None
    credit = trainer.objective.credit(rollout_batch(trainer, mb, logps, mask), progress=lam)
    normalizer = trainer.dist.sum_dict(dict(credit.normalizer))
    m = mask.float()
    metrics = {"entropy_sum": float((entropy * m).sum()), "entropy_tokens": float(m.sum())}
    metrics.update({k: float(v) for k, v in credit.metrics.items() if k not in _TRAINER_GROUP_STATS})
    return CreditPass(credit, normalizer, fused), metrics


# ---- 5. update ------------------------------------------------------------------------------------------


def step_scheduler(trainer: Trainer) -> None:
    with warnings.catch_warnings():  # stepping the schedule of a skipped update is intended
        warnings.simplefilter("ignore", UserWarning)
        trainer.scheduler.step()


def _backward_micro_batches(trainer: Trainer, mb: Rows, cp: CreditPass) -> tuple[dict[str, float], float]:
    """``objective.loss`` backpropagated over the micro-batches of `mb`; (mean micro-batch metrics, tokens)."""
    objective = trainer.objective
    if cp.fused is not None:
        lp, mask = cp.fused
        out = objective.loss(rollout_batch(trainer, mb, lp, mask), cp.credit, normalizer=cp.normalizer)
        if out.loss.requires_grad:
            out.loss.backward()
        return {k: float(v) for k, v in out.metrics.items()}, float(mask.sum())
    chunk = trainer.cfg.batch.micro_batch_size or len(mb)
    micro_metrics: dict[str, list[float]] = defaultdict(list)
    tokens = 0.0
    for start in range(0, len(mb), chunk):
        idx = torch.arange(start, min(start + chunk, len(mb)))
        micro = mb.select(idx)
        lp, mask, _ = _forward(trainer, trainer.model, micro)
        out = objective.loss(
            rollout_batch(trainer, micro, lp, mask), cp.credit.select(idx.to(trainer.device)), cp.normalizer
        )
        if out.loss.requires_grad:
            out.loss.backward()
        for k, v in out.metrics.items():  # per-micro-batch metrics: mean over micro-batches
            micro_metrics[k].append(float(v))
        tokens += float(mask.sum())
    return {k: sum(v) / len(v) for k, v in micro_metrics.items()}, tokens


def _coupled_backward(trainer: Trainer, mb: Rows, lam: float) -> tuple[dict[str, float], float]:
    """The coupled objective on the whole mini-batch (``batch.update_mode=coupled``: the oracle path)."""
    lp, mask, _ = _forward(trainer, trainer.model, mb)
    out = trainer.objective(rollout_batch(trainer, mb, lp, mask), progress=lam)
    out.loss.backward()
    metrics = {k: float(v) for k, v in out.metrics.items() if k not in _TRAINER_GROUP_STATS}
    return metrics, float(mask.sum())


def update(trainer: Trainer, rows: Rows, lam: float, timer: PhaseTimer) -> dict[str, float]:
    """Phases 4-5 per mini-batch (credit, then update), one optimizer step each; returns the update's metrics."""
    cfg, dist = trainer.cfg, trainer.dist
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    sums: dict[str, list[float]] = defaultdict(list)
    train_tokens = 0.0
    for mb_idx in rows.mini_batches(cfg.batch.mini_batches):
        with timer("update"):
            # A mini-batch empty here but not elsewhere still joins the collectives.
            empty = len(mb_idx) == 0
            mb = rows.placeholder() if empty else rows.select(mb_idx)
            skip = dist.all_min(int(empty)) == 1  # empty on every process: nothing to update
            if skip:
                step_scheduler(trainer)
            else:
                trainer.optimizer.zero_grad(set_to_none=True)
        if skip:
            continue
        if cfg.batch.update_mode == "coupled":
            with timer("update"):
                metrics, tokens = _coupled_backward(trainer, mb, lam)
        else:
            with timer("credit"):
                cp, metrics = credit_pass(trainer, mb, lam)
            with timer("update"):
                micro, tokens = _backward_micro_batches(trainer, mb, cp)
                metrics.update(micro)
        with timer("update"):
            train_tokens += tokens
            dist.sum_gradients(params)
            max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm is not None else float("inf")
            grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
            trainer.optimizer.step()
            step_scheduler(trainer)
            sums["optim/grad_norm"].append(float(grad_norm))
            for k, v in metrics.items():
                sums[k if "/" in k or k.startswith("entropy_") else f"{cfg.objective.name}/{k}"].append(v)
    with timer("update"):
        trainer.optimizer.zero_grad(set_to_none=True)
        return _reduce_update_metrics(trainer, sums, train_tokens)


def _reduce_update_metrics(
    trainer: Trainer, sums: dict[str, list[float]], train_tokens: float
) -> dict[str, float]:
    """Means over mini-batches, then over processes; entropy is a token mean over every process."""
    dist = trainer.dist
    entropy = {k: sums.pop(k, []) for k in ("entropy_sum", "entropy_tokens")}
    out = {k: sum(vals) / len(vals) for k, vals in sums.items()}
    # Mean over processes of the per-process means (objective diagnostics are batch-level).
    if dist.enabled and out:
        keys = sorted(out)
        red = dist.sum_dict({k: torch.tensor(out[k]) for k in keys})
        out = {k: float(v) / dist.world_size for k, v in red.items()}
    if entropy["entropy_tokens"]:
        ent = dist.sum_dict(
            {
                "s": torch.tensor(sum(entropy["entropy_sum"])),
                "n": torch.tensor(sum(entropy["entropy_tokens"])),
            }
        )
        out["entropy/mean"] = float(ent["s"]) / max(float(ent["n"]), 1.0)
    out["perf/train_tokens"] = float(dist.sum_dict({"t": torch.tensor(train_tokens)})["t"])
    return out


# ---- the step -------------------------------------------------------------------------------------------


def run_step(trainer: Trainer) -> dict[str, float]:
    """One RL step (the algorithm box); returns the step's metrics, reduced over processes."""
    cfg, dist = trainer.cfg, trainer.dist
    step = trainer.step_index
    lam = step / cfg.steps  # progress: drives the margin schedule
    timer = PhaseTimer()
    G, local_prompts = cfg.batch.group_size, cfg.batch.prompts_per_step // dist.world_size

    # 1-2. generate and verify; dynamic sampling: again until every process has P valid groups.
    rounds: list[Rows] = []
    gen_tokens = 0.0
    for attempt in range(cfg.batch.max_sampling_tries if cfg.batch.dynamic_sampling else 1):
        with timer("generate"):
            sampled, gen_metrics = generate(trainer, step, attempt)
        with timer("verify"):
            rows, _ = verify(trainer, sampled)
        rounds.append(rows)
        gen_tokens += gen_metrics["perf/gen_tokens"]
        if not cfg.batch.dynamic_sampling:
            break
        with timer("group"):
            have = sum(int(valid_rows(r).sum()) // G for r in rounds)
            enough = dist.all_min(int(have >= local_prompts)) == 1
        if enough:
            break

    # 3. group: keep the valid groups.
    with timer("group"):
        rows, metrics = group(trainer, rounds, gen_tokens)
    if "rollout/logprob_mismatch" in gen_metrics:  # vllm: of the last round (this process)
        metrics["rollout/logprob_mismatch"] = gen_metrics["rollout/logprob_mismatch"]

    # 4-5. credit and update, or a skipped step when no process kept a group.
    if rows is None:
        logger.warning("step %d: every group is all-correct or all-wrong; update skipped", step)
        with timer("update"):
            for _ in range(cfg.batch.mini_batches):
                step_scheduler(trainer)
        metrics["step/skipped"] = 1.0
    else:
        with timer("credit"):
            sampling_logps(trainer, rows)
            sleep_rollout_engine(trainer)  # vllm with rollout.vllm_sleep: free its memory for the update
        metrics.update(trainer._update(rows, lam, timer))
        with timer("update"):
            sync_rollout_engine(trainer)  # vllm: the new weights, in place, before the next rollout
        metrics["step/skipped"] = 0.0

    trainer.step_index += 1
    metrics["progress/lambda"] = lam
    metrics["optim/lr"] = trainer.scheduler.get_last_lr()[0]
    for name in PHASES:
        metrics[f"time/{name}"] = timer.seconds.get(name, 0.0)
    metrics["time/step"] = timer.total
    if timer.seconds.get("generate"):
        metrics["perf/gen_tokens_per_s"] = metrics["perf/gen_tokens"] / timer.seconds["generate"]
    train_seconds = timer.seconds.get("credit", 0.0) + timer.seconds.get("update", 0.0)
    if train_seconds and "perf/train_tokens" in metrics:
        metrics["perf/train_tokens_per_s"] = metrics["perf/train_tokens"] / train_seconds
    return metrics
