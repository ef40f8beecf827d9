"""Time one TRL optimizer step with ConSPOTrainer side by side with TRL's own GRPOTrainer (CPU, tiny policy).

    .venv/bin/python benchmarks/integrations_trl.py [--rounds 5] [--steps 2] [--completion 32]

Both trainers train the testbed's tiny Llama policy (built from its config, randomly initialised) on the same
prompts with the same toy reward: 2 prompts x G=8 rollouts per optimizer step, split over 2 accumulation
micro-steps. ConSPOTrainer adds one no-grad scoring forward per generation batch (TRL skips its own
`old_per_token_logps` forward in this on-policy set-up) plus the credit computation; everything else is
TRL's. Trainers run in interleaved rounds and the median per-step time is reported; torch uses one thread
and the clock is this process's CPU time, so other load on a shared machine hits both alike.
Target: ConSPOTrainer within 1.25x of GRPOTrainer per step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import warnings

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer

from conspo.integrations.trl import ConSPOConfig, ConSPOTrainer
from conspo.testbed import build_char_tokenizer, build_tiny_model

PROMPTS = ["12+30=", "7*6=", "81-39=", "5+5="]


def toy_reward(completions, **kwargs):
    return [float(sum(map(ord, text)) % 2 == 0) for text in completions]


def time_trainer(kind: str, steps: int, completion: int, out_dir: str) -> float:
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, seed=0)
    common = dict(
        output_dir=out_dir,
        use_cpu=True,
        bf16=False,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        num_generations=8,
        max_completion_length=completion,
        max_steps=steps,
        learning_rate=1e-4,
        seed=0,
        disable_dropout=True,
    )
    config_cls, trainer_cls = (ConSPOConfig, ConSPOTrainer) if kind == "conspo" else (GRPOConfig, GRPOTrainer)
    trainer = trainer_cls(
        model=model,
        reward_funcs=toy_reward,
        args=config_cls(**common),
        train_dataset=Dataset.from_dict({"prompt": PROMPTS * 8}),
        processing_class=tokenizer,
    )
    start = time.process_time()
    trainer.train()
    return (time.process_time() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2, help="optimizer steps per timed run")
    parser.add_argument("--completion", type=int, default=32, help="max completion tokens")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    times: dict[str, list[float]] = {"grpo (TRL)": [], "conspo": []}
    with tempfile.TemporaryDirectory() as out_dir:
        time_trainer("conspo", 1, args.completion, out_dir)  # warm-up: imports, kernels, allocator
        for _ in range(args.rounds):
            times["grpo (TRL)"].append(time_trainer("grpo", args.steps, args.completion, out_dir))
            times["conspo"].append(time_trainer("conspo", args.steps, args.completion, out_dir))
    base = statistics.median(times["grpo (TRL)"])
    print(
        f"TRL optimizer step, tiny Llama, 16 rollouts x {args.completion} tokens, CPU time, median of {args.rounds}"
    )
    print(f"{'trainer':<14}{'s / step':>10}{'ratio':>8}")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"{name:<14}{median:>10.3f}{median / base:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
