"""Rollout speed on CPU: HFGenerator rows/s by batch size, and completion_logprobs vs a naive log-softmax.

    python benchmarks/rollout.py [--rows 64] [--max-new-tokens 32] [--repeats 3]

Everything runs side by side in one process on the testbed-shaped tiny Llama (random weights, char
tokenizer), so the ratios are comparable even on a shared machine; absolute times are not.
"""

from __future__ import annotations

import argparse
import time

import torch

from conspo.rollout import HFGenerator, SamplingParams, build_completion_batch, completion_logprobs
from conspo.testbed import TinyModelConfig, build_char_tokenizer, build_tiny_model, make_task


def best_of(repeats: int, fn) -> tuple[float, float]:
    """Best (wall seconds, CPU seconds) of ``repeats`` runs; CPU time is steadier on a shared machine."""
    times = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
    return min(times)


def naive_logprobs(model, rollouts, pad_token_id: int) -> torch.Tensor:
    """The straightforward version, for comparison."""
    # The straightforward version: full [B, L, V] fp32 log_softmax over every position, then gather.
    batch = build_completion_batch(rollouts, pad_token_id)
    logits = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids
    ).logits
    logps = torch.log_softmax(logits.float(), dim=-1)[:, batch.prompt_width - 1 : -1]
    return logps.gather(-1, batch.completion_ids.unsqueeze(-1)).squeeze(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32, help="completions per measurement (prompts x 8)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--only", choices=["all", "generate", "logprobs"], default="all")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.only in ("all", "generate"):
        generate_section(args)
    if args.only in ("all", "logprobs"):
        logprob_section(args.repeats)


def generate_section(args: argparse.Namespace) -> None:
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, TinyModelConfig(), seed=0).eval()
    prompts = [f"<s>{p.problem}\n" for p in make_task("add", seed=0).eval_problems(args.rows // 8)]
    params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    print(
        f"tiny Llama ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params), {len(prompts)} prompts x 8"
    )
    HFGenerator(model, tokenizer, batch_size=8).generate(prompts[:1], n=8, params=params)  # warm-up
    print("\n| HFGenerator batch_size | wall s | CPU s | rows per CPU s | speed-up vs 1 (CPU) |")
    print("|---:|---:|---:|---:|---:|")
    base = None
    for batch_size in (1, 8, 32):
        generator = HFGenerator(model, tokenizer, batch_size=batch_size)
        wall, cpu = best_of(args.repeats, lambda g=generator: g.generate(prompts, n=8, params=params))
        base = base or cpu
        print(f"| {batch_size} | {wall:.2f} | {cpu:.2f} | {len(prompts) * 8 / cpu:.1f} | {base / cpu:.2f}x |")


def logprob_section(repeats: int, batch: int = 8, prompt_len: int = 96, completion_len: int = 160) -> None:
    # A realistic vocabulary is where gathering only the chosen tokens pays: a [B, L, V] fp32 log_softmax
    # over 32k tokens is the largest tensor of a training step.
    from transformers import LlamaConfig, LlamaForCausalLM

    vocab = 32_000
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4
    )
    model = LlamaForCausalLM(config).eval()
    rows = [
        (
            torch.randint(3, vocab, (prompt_len - 7 * i,)).tolist(),
            torch.randint(3, vocab, (completion_len - 11 * i,)).tolist(),
        )
        for i in range(batch)
    ]
    with torch.no_grad():
        fast, mask = completion_logprobs(model, rows, pad_token_id=0)
        slow = naive_logprobs(model, rows, 0)
        assert torch.allclose(fast[mask], slow[mask], atol=1e-4), "the two log-prob paths disagree"
        t_fast = best_of(repeats, lambda: completion_logprobs(model, rows, pad_token_id=0))
        t_slow = best_of(repeats, lambda: naive_logprobs(model, rows, 0))
    full_mb = batch * (prompt_len + completion_len) * vocab * 4 / 2**20
    kept_mb = batch * (completion_len + 1) * vocab * 4 / 2**20
    row_mb = (completion_len) * vocab * 4 / 2**20
    print(
        f"\n| log-probs, {batch} rows, prompt <= {prompt_len}, completion <= {completion_len}, vocab {vocab} "
        "| wall s | CPU s | speed-up (CPU) | largest fp32 [.., V] tensor |"
    )
    print("|---|---:|---:|---:|---:|")
    print(
        f"| naive: full logits + fp32 log_softmax | {t_slow[0]:.3f} | {t_slow[1]:.3f} | 1.00x | {full_mb:.0f} MiB |"
    )
    print(
        f"| completion_logprobs (logits_to_keep, row-wise fp32 logsumexp) | {t_fast[0]:.3f} | {t_fast[1]:.3f} "
        f"| {t_slow[1] / t_fast[1]:.2f}x | logits {kept_mb:.0f} MiB, one row {row_mb:.0f} MiB |"
    )


if __name__ == "__main__":
    main()
