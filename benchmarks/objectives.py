"""Time loss + backward of every registered objective on one optimizer-step batch, side by side with GRPO.

    .venv/bin/python benchmarks/objectives.py [--rows 512] [--tokens 1024] [--group-size 8] [--repeats 9]

The batch is 512 rollouts x 1024 tokens (groups of 8, random lengths, off-policy log-probs, binary rewards).
The "model" is the [B, T] log-prob tensor itself, so the numbers measure the objective alone. Objectives
are timed in interleaved rounds (every objective once per round) and the median is reported, so load from
other processes on the machine hits all of them alike. Ratios are against GRPO measured in the same run.
By default torch runs one thread and the clock is this process's CPU time: on a shared machine, OpenMP
threads waiting for descheduled siblings and wall-clock preemption otherwise swamp the objective's own cost
(`--threads 0 --clock wall` measures the default torch set-up instead).
Targets: ConSPO at or below GRPO (no ratio, no clipping), no objective above 2x GRPO.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from conspo.objectives import RolloutBatch, get_objective, list_objectives


def make_batch(rows: int, tokens: int, group_size: int, seed: int = 0) -> RolloutBatch:
    gen = torch.Generator().manual_seed(seed)
    group_ids = torch.arange(rows) // group_size
    group_ids = group_ids[torch.randperm(rows, generator=gen)]
    lengths = torch.randint(tokens // 4, tokens + 1, (rows,), generator=gen)
    mask = torch.arange(tokens)[None, :] < lengths[:, None]
    token_logps = (-2.0 * torch.rand(rows, tokens, generator=gen)).requires_grad_(True)
    old = token_logps.detach() + 0.1 * torch.randn(rows, tokens, generator=gen)
    rewards = (torch.rand(rows, generator=gen) > 0.5).float()
    return RolloutBatch(token_logps, mask, group_ids, rewards, old_token_logps=old)


CLOCK = time.process_time


def time_coupled(objective, batch: RolloutBatch) -> float:
    start = CLOCK()
    out = objective(batch, progress=0.5)
    out.loss.backward()
    elapsed = CLOCK() - start
    batch.token_logps.grad = None
    return elapsed


def time_decomposed(objective, batch: RolloutBatch, micro: int) -> float:
    start = CLOCK()
    credit = objective.credit(batch.detach(), progress=0.5)
    for first in range(0, batch.num_rows, micro):
        idx = slice(first, first + micro)  # contiguous micro-batches are views, as a trainer would slice them
        objective.loss(batch.select(idx), credit.select(idx), normalizer=credit.normalizer).loss.backward()
    elapsed = CLOCK() - start
    batch.token_logps.grad = None
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument(
        "--micro-batch", type=int, default=64, help="rows per micro-batch in the decomposed form"
    )
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--clock", choices=("cpu", "wall"), default="cpu", help="process CPU time or wall time"
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    batch = make_batch(args.rows, args.tokens, args.group_size)
    names = list_objectives()
    objectives = {name: get_objective(name) for name in names}
    for objective in objectives.values():  # warm-up: allocator, lazy init
        time_coupled(objective, batch)
        time_decomposed(objective, batch, args.micro_batch)

    coupled: dict[str, list[float]] = {name: [] for name in names}
    split: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name, objective in objectives.items():
            coupled[name].append(time_coupled(objective, batch))
            split[name].append(time_decomposed(objective, batch, args.micro_batch))

    med = {name: statistics.median(times) for name, times in coupled.items()}
    med_split = {name: statistics.median(times) for name, times in split.items()}
    base = med["grpo"]
    print(
        f"loss + backward, {args.rows} rollouts x {args.tokens} tokens, groups of {args.group_size}, "
        f"median of {args.repeats} interleaved rounds, {args.clock} clock, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s)"
    )
    print(
        f"{'objective':<10} {'coupled ms':>11} {'x GRPO':>7} {'decomposed ms':>14} {'x GRPO':>7}  (micro-batch {args.micro_batch})"
    )
    for name in sorted(names, key=med.get):
        print(
            f"{name:<10} {1e3 * med[name]:>11.2f} {med[name] / base:>7.2f} "
            f"{1e3 * med_split[name]:>14.2f} {med_split[name] / med_split['grpo']:>7.2f}"
        )
    worst = max(med, key=med.get)
    print(
        f"ConSPO / GRPO = {med['conspo'] / base:.2f} (target <= 1); slowest: {worst} at {med[worst] / base:.2f}x "
        "(target <= 2)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
