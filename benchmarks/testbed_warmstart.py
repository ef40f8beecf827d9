"""Warm-start cost of the testbed policy: SFT step time with 1 vs 2 torch threads, side by side.

    .venv/bin/python benchmarks/testbed_warmstart.py [--steps 20] [--rounds 3]

Each round times ``--steps`` optimizer steps of the default warm start (default model, batch, sequence
lengths) under each thread count, interleaved, and reports the median wall and process-CPU seconds per step
and the projected time of the full warm start (``WarmStartConfig().steps`` steps, measurement excluded).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from conspo.data import render_prompt
from conspo.testbed import DEFAULT_TESTBED, build_char_tokenizer, build_tiny_model, make_task
from conspo.testbed.warmstart import _collate, _encode_examples


def time_steps(threads: int, steps: int, examples, pad_id: int) -> tuple[float, float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build_tiny_model(build_char_tokenizer(), DEFAULT_TESTBED.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    rng = random.Random(0)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        batch = _collate(rng.sample(examples, DEFAULT_TESTBED.batch_size), pad_id)
        loss = model(**batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tok = build_char_tokenizer()
    task = make_task(DEFAULT_TESTBED.task, difficulty=DEFAULT_TESTBED.difficulty)
    problems = task.train_problems(512)
    examples = _encode_examples(
        tok,
        [render_prompt(p.problem, tok, "testbed") for p in problems],
        [task.teacher_completion(p.problem) for p in problems],
    )
    results: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for threads in results:
            results[threads].append(time_steps(threads, args.steps, examples, tok.pad_token_id))
    base = statistics.median(w for w, _ in results[1])
    print(
        f"default warm start: {DEFAULT_TESTBED.steps} steps x {DEFAULT_TESTBED.batch_size} sequences of "
        f"<= {max(len(ids) for ids, _ in examples)} tokens"
    )
    print("| threads | wall s / step | CPU s / step | wall ratio | projected warm start (wall s) |")
    print("|---|---|---|---|---|")
    for threads, rows in results.items():
        wall = statistics.median(w for w, _ in rows)
        cpu = statistics.median(c for _, c in rows)
        print(
            f"| {threads} | {wall:.3f} | {cpu:.3f} | {wall / base:.2f} | {wall * DEFAULT_TESTBED.steps:.0f} |"
        )


if __name__ == "__main__":
    main()
