"""Seconds per RL step (generate / verify / update) and peak memory: conspo (ConSPO, GRPO) vs TRL's GRPOTrainer.

    python benchmarks/train_step.py                                   # CPU: testbed policy, P=8, G=8, 24 new tokens
    python benchmarks/train_step.py --device cuda --model-config 0.5b # GPU: a 0.5B-class Llama, random weights

Every system gets the same model folder, prompts, P (prompts per step), G (completions per prompt), maximum
completion length, sampling (temperature 1, top-p 1), learning rate, verifier and torch thread count, and takes
one optimizer step per rollout batch (TRL: ``per_device_train_batch_size = P*G``, ``steps_per_generation = 1``,
``num_iterations = 1``, ``beta = 0``, ``loss_type = "grpo"``). Each system runs in its own child process, so peak
RSS is its own; with ``--rounds 2`` the order is reversed in the second round to spread drift in a shared
machine's load. The first ``--warmup`` steps of each child are not timed.

Phases: *generate* (HF ``generate``, KV cache), *verify* (the conspo verifier pool, the same for TRL, which calls it
as its reward function), *update* (everything else in the step: grouping, the scoring forward, loss,
backward, optimizer). TRL phases are timed by wrapping ``GRPOTrainer._generate`` and ``_calculate_rewards``; its
step time comes from a ``TrainerCallback`` (``on_step_begin`` / ``on_step_end``).

Known differences in the work done, by design: conspo drops all-correct and all-wrong groups before the
update (the paper's setting), TRL keeps them (their advantage is zero but they still go through the
forward and backward pass); the ``kept`` column shows conspo's fraction of rows updated on.

conspo's update takes the credit from the gradient forward when one micro-batch holds the mini-batch (one
forward per optimizer step, as here); ``--two-pass`` forces the previous separate no-grad credit forward, for
before/after comparisons.

``--lora`` compares ConSPO without and with LoRA (``model.lora.r = --lora-rank``, the default target modules:
every attention and MLP projection) on the same settings: step time, peak memory and trainable parameters.

    python benchmarks/train_step.py --lora                                  # the testbed policy
    python benchmarks/train_step.py --lora --model-config 0.5b --prompts 2 --group-size 4 --max-new-tokens 16 \
        --steps 2 --rounds 1                                                # a 0.5B shape on CPU, a few steps

``--model-config 0.5b`` builds a Llama with Qwen2.5-0.5B's shape (24 layers, hidden 896, 14 heads, 2 KV heads,
vocab 151936) from a config in code, random weights, nothing from the hub. Random weights never answer
correctly, so that mode uses ``--reward parity`` (a deterministic pseudo-random 0/1 reward) for all systems.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

SYSTEMS = ("conspo-conspo", "conspo-grpo", "trl-grpo", "conspo-conspo-lora")
DEFAULT_SYSTEMS = SYSTEMS[:3]
LORA_SYSTEMS = ("conspo-conspo", "conspo-conspo-lora")  # --lora: ConSPO without and with LoRA
TARGET_RATIO = 0.8  # the target: conspo's step at most 0.8x TRL's


# ------------------------------------------------------------------------------------------------ models


def qwen_0p5b_shape(vocab_size: int = 151_936) -> dict[str, Any]:
    """Qwen2.5-0.5B's dimensions on a Llama config (transformers 5 reloads Qwen2 folders with another tokenizer)."""
    return {
        "vocab_size": vocab_size,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "max_position_embeddings": 4096,
        "rope_theta": 1_000_000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    }


def build_model_dir(model_config: str, out: Path) -> Path:
    """A from_pretrained-loadable folder (model + tokenizer) for ``model_config``."""
    if model_config == "testbed":
        from conspo.testbed import ensure_testbed_policy

        return ensure_testbed_policy()
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from conspo.testbed import build_char_tokenizer, build_tiny_model

    tokenizer = build_char_tokenizer()
    if model_config == "tiny":  # the testbed policy's shape, random weights
        model = build_tiny_model(tokenizer)
    elif model_config == "0.5b":
        # The character tokenizer padded to Qwen's vocabulary with placeholder tokens ("<x123>"), so that every
        # sampled id decodes to text the (parity) reward can tell apart; the compute is a 0.5B model's.
        vocab_size = qwen_0p5b_shape()["vocab_size"]
        tokenizer.add_tokens([f"<x{i}>" for i in range(len(tokenizer), vocab_size)])
        torch.manual_seed(0)
        model = LlamaForCausalLM(
            LlamaConfig(
                **qwen_0p5b_shape(),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
    else:
        raise SystemExit(f"--model-config must be testbed, tiny or 0.5b; got {model_config!r}")
    folder = out / f"model-{model_config}"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------------------------- rewards


def parity_correct(text: str) -> bool:
    """A deterministic pseudo-random label for models that cannot solve anything (random weights)."""
    return zlib.crc32(text.encode()) % 2 == 0


class ParityVerifier:
    """Stands in for MathVerifier with ``--reward parity`` (same ``verify_batch`` interface)."""

    def verify_batch(self, completions, answers):
        from conspo.rewards import Verdict

        return [
            Verdict(reward=float(ok), correct=ok, extracted=None, reason="custom")
            for ok in map(parity_correct, completions)
        ]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return None

    def close(self) -> None:
        return None


def parity_reward_fn():
    """conspo's reward function with the parity verifier in place of the math pool (``--reward parity``)."""
    from conspo.rewards import RewardFunction

    class ParityRewardFn(RewardFunction):
        @property
        def verifier(self):
            return ParityVerifier()

    return ParityRewardFn()


def parity_reward(prompts, completions, **kwargs):
    return [float(parity_correct(c)) for c in completions]


# ------------------------------------------------------------------------------------------- the children


def peak_memory(device: str) -> dict[str, float]:
    import torch

    # ru_maxrss is KiB on Linux: this process only (verifier workers are separate processes).
    out = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device == "cuda":
        out["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return out


class _ClockedTime:
    """The ``time`` module with ``perf_counter`` swapped for another clock (conspo's phase timers read it)."""

    def __init__(self, clock):
        self.perf_counter = clock

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


def use_clock(name: str):
    """The clock every phase is timed with: wall (perf_counter) or this process's CPU time (all its threads).

    CPU time leaves out waiting for a core on a shared machine, and the verifier's worker processes: on the
    testbed the verify phase is then the in-process fast path only.
    """
    if name == "wall":
        return time.perf_counter
    import conspo.trainer.phases as phases

    phases.time = _ClockedTime(time.process_time)
    return time.process_time


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def run_conspo(args: argparse.Namespace, objective: str, lora_rank: int = 0) -> dict[str, Any]:
    """conspo's own trainer: ``Trainer.step()`` with its phase timers (``lora_rank > 0``: with LoRA)."""
    from conspo.trainer.config import TrainConfig
    from conspo.trainer.loop import Trainer

    cfg = TrainConfig()
    cfg.device = args.device
    cfg.num_threads = args.threads
    cfg.seed = args.seed
    cfg.steps = args.warmup + args.steps
    cfg.output_dir = str(Path(args.workdir) / "conspo-runs")
    cfg.model.name_or_path = args.model_dir
    cfg.data.train = "testbed"
    cfg.objective.name = objective
    cfg.optim.lr = args.lr
    cfg.batch.prompts_per_step = args.prompts
    cfg.batch.group_size = args.group_size
    cfg.rollout.max_new_tokens = args.max_new_tokens
    cfg.rollout.temperature = 1.0
    cfg.rollout.top_p = 1.0
    cfg.rollout.backend = args.backend
    cfg.batch.update_mode = args.update_mode
    cfg.batch.filter_groups = not args.no_filter
    cfg.reward.num_workers = 1
    cfg.reward.timeout = 5.0
    cfg.model.lora.r = lora_rank
    use_clock(args.clock)
    Trainer.fuse_credit_forward = not args.two_pass
    trainer = Trainer(cfg)
    if args.reward == "parity":
        trainer.reward_fn = parity_reward_fn()
    steps = []
    with trainer.reward_fn:
        for i in range(cfg.steps):
            sync(args.device)
            m = trainer.step()
            sync(args.device)
            if i < args.warmup:
                continue
            gen, ver = m.get("time/generate", 0.0), m.get("time/verify", 0.0)
            steps.append(
                {
                    "step": m["time/step"],
                    "generate": gen,
                    "verify": ver,
                    "update": m["time/step"] - gen - ver,
                    "gen_tokens": m.get("perf/gen_tokens", 0.0),
                    "train_tokens": m.get("perf/train_tokens", 0.0),
                    "kept": m.get("groups/kept", 0.0) / args.prompts,
                    "accuracy": m.get("reward/accuracy", float("nan")),
                }
            )
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    return {"steps": steps, "trainable_params": trainable, **peak_memory(args.device)}


def run_trl(args: argparse.Namespace) -> dict[str, Any]:
    """TRL's GRPOTrainer on the same model, prompts and settings; phases timed by wrapping its methods."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from conspo.data import render_prompt
    from conspo.rewards import build_reward_fn
    from conspo.rewards.reward_fn import RewardConfig
    from conspo.testbed import make_task

    torch.set_num_threads(args.threads)
    total = args.warmup + args.steps
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    # The same problems conspo's trainer draws (testbed task, seed), rendered with the same template.
    problems = make_task("add", seed=args.seed).train_problems(args.prompts * total)
    dataset = Dataset.from_dict(
        {
            "prompt": [render_prompt(p.problem, tokenizer, "testbed") for p in problems],
            "answer": [p.answer for p in problems],
        }
    )
    reward_fn = (
        parity_reward
        if args.reward == "parity"
        else build_reward_fn(RewardConfig(num_workers=1, timeout=5.0))
    )
    config = GRPOConfig(
        output_dir=str(Path(args.workdir) / "trl-out"),
        use_cpu=args.device == "cpu",
        bf16=args.device == "cuda",  # conspo autocasts to bf16 on GPU too
        report_to="none",
        beta=0.0,
        loss_type="grpo",
        use_vllm=False,
        use_liger_kernel=False,
        learning_rate=args.lr,
        per_device_train_batch_size=args.prompts * args.group_size,
        gradient_accumulation_steps=1,
        num_generations=args.group_size,
        max_completion_length=args.max_new_tokens,
        temperature=1.0,
        top_p=1.0,
        max_steps=total,
        logging_steps=1,
        save_strategy="no",
        seed=args.seed,
        disable_tqdm=True,
        dataloader_num_workers=0,
        max_grad_norm=1.0,
    )

    clock = use_clock(args.clock)
    phase: dict[str, float] = {"generate": 0.0, "verify": 0.0, "gen_tokens": 0.0}
    steps: list[dict[str, float]] = []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args_, state, control, **kwargs):
            sync(args.device)
            phase.update(generate=0.0, verify=0.0, gen_tokens=0.0, start=clock())

        def on_step_end(self, args_, state, control, **kwargs):
            sync(args.device)
            step = clock() - phase["start"]
            steps.append(
                {
                    "step": step,
                    "generate": phase["generate"],
                    "verify": phase["verify"],
                    "update": step - phase["generate"] - phase["verify"],
                    "gen_tokens": phase["gen_tokens"],
                    "kept": 1.0,  # TRL updates on every group
                }
            )

    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_fn,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[StepTimer()],
    )
    generate, calculate_rewards = trainer._generate, trainer._calculate_rewards

    def timed_generate(*a, **k):
        sync(args.device)
        t0 = clock()
        out = generate(*a, **k)
        sync(args.device)
        phase["generate"] += clock() - t0
        phase["gen_tokens"] += float(sum(len(ids) for ids in out[1]))  # completion_ids_list
        return out

    def timed_rewards(*a, **k):
        t0 = clock()
        out = calculate_rewards(*a, **k)
        phase["verify"] += clock() - t0
        return out

    trainer._generate, trainer._calculate_rewards = timed_generate, timed_rewards
    try:
        trainer.train()
    finally:
        if hasattr(reward_fn, "close"):
            reward_fn.close()
    return {"steps": steps[args.warmup :], **peak_memory(args.device)}


def child_main(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    if args.child == "trl-grpo":
        result = run_trl(args)
    elif args.child.endswith("-lora"):
        result = run_conspo(args, objective="conspo", lora_rank=args.lora_rank)
    else:
        result = run_conspo(args, objective=args.child.split("-", 1)[1])
    Path(args.json_out).write_text(json.dumps(result))


# --------------------------------------------------------------------------------------------- the parent


def median(rows: list[dict], key: str) -> float:
    values = [r[key] for r in rows if key in r]
    return statistics.median(values) if values else float("nan")


def run_child(system: str, args: argparse.Namespace, model_dir: Path, workdir: Path) -> dict[str, Any]:
    out = workdir / f"{system}-{time.monotonic_ns()}.json"
    cmd = [
        sys.executable,
        __file__,
        "--child",
        system,
        "--model-dir",
        str(model_dir),
        "--workdir",
        str(workdir),
        "--json-out",
        str(out),
        *args.passthrough,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("HF_HUB_OFFLINE", "1")
    print(f"  running {system} ...", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{system} failed (exit {proc.returncode})")
    result = json.loads(out.read_text())
    print(
        f"  {system}: {len(result['steps'])} timed steps in {time.perf_counter() - t0:.0f} s (process total)"
    )
    return result


def summarize(results: dict[str, list[dict]], args: argparse.Namespace) -> list[dict[str, Any]]:
    table = []
    for system in SYSTEMS:
        runs = results.get(system)
        if not runs:
            continue
        steps = [s for run in runs for s in run["steps"]]
        row = {
            "system": system,
            "steps": len(steps),
            "step_s": median(steps, "step"),
            "generate_s": median(steps, "generate"),
            "verify_s": median(steps, "verify"),
            "update_s": median(steps, "update"),
            "gen_tok_per_s": sum(s["gen_tokens"] for s in steps)
            / max(sum(s["generate"] for s in steps), 1e-9),
            "kept": statistics.mean(s["kept"] for s in steps),
            "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
        }
        if "trainable_params" in runs[0]:
            row["trainable_M"] = runs[0]["trainable_params"] / 1e6
        if args.device == "cuda":
            row["cuda_max_allocated_mib"] = max(run["cuda_max_allocated_mib"] for run in runs)
        table.append(row)
    trl = next((r for r in table if r["system"] == "trl-grpo"), None)
    for row in table:
        row["vs_trl"] = row["step_s"] / trl["step_s"] if trl else float("nan")
    return table


def print_table(table: list[dict[str, Any]], args: argparse.Namespace) -> str:
    cols = [
        "system",
        "steps",
        "step_s",
        "generate_s",
        "verify_s",
        "update_s",
        "gen_tok_per_s",
        "kept",
        "peak_rss_mib",
    ]
    if args.device == "cuda":
        cols.append("cuda_max_allocated_mib")
    if all("trainable_M" in row for row in table):
        cols.append("trainable_M")
    cols.append("vs_trl")
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in table:
        cells = []
        for c in cols:
            v = row[c]
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--model-config", default="testbed", help="testbed (warm-started policy), tiny or 0.5b"
    )
    parser.add_argument("--prompts", type=int, default=8, help="P: prompts per step")
    parser.add_argument("--group-size", type=int, default=8, help="G: completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per child")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per child")
    parser.add_argument(
        "--rounds", type=int, default=2, help="rounds over the systems (order reversed each round)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads, every system")
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--reward", choices=("math", "parity"), default=None, help="default: math, parity for 0.5b"
    )
    parser.add_argument(
        "--systems",
        default=None,
        help=f"default: {','.join(DEFAULT_SYSTEMS)}; with --lora {','.join(LORA_SYSTEMS)}",
    )
    parser.add_argument(
        "--lora", action="store_true", help="ConSPO without and with LoRA (model.lora.r = --lora-rank)"
    )
    parser.add_argument(
        "--lora-rank", type=int, default=16, help="model.lora.r of the conspo-conspo-lora system"
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: perf_counter; cpu: this process's CPU time (steadier on a shared machine with --threads 1)",
    )
    parser.add_argument(
        "--no-filter",
        action="store_true",
        help="conspo updates on every group like TRL (batch.filter_groups=false): the same work per step",
    )
    parser.add_argument(
        "--update-mode",
        choices=("decomposed", "coupled"),
        default="decomposed",
        help="conspo's batch.update_mode (decomposed, the default; coupled: one objective(batch) call per mini-batch)",
    )
    parser.add_argument(
        "--backend",
        choices=("hf", "kv_cache", "vllm"),
        default="hf",
        help="conspo's rollout.backend (hf: model.generate like TRL; kv_cache: the bare KV-cache loop; vllm: the "
        "colocated vLLM engine, synced after every step: run in .venv-vllm with --systems conspo-conspo)",
    )
    parser.add_argument(
        "--two-pass",
        action="store_true",
        help="conspo: always a separate no-grad credit forward (the trainer otherwise takes the credit from the "
        "gradient forward when one micro-batch holds the mini-batch)",
    )
    parser.add_argument("--json", default=None, help="also write the table as JSON here")
    # Internal: a child process runs one system.
    parser.add_argument("--child", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parser.add_argument("--json-out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reward is None:
        args.reward = "parity" if args.model_config == "0.5b" else "math"
    if args.child:
        child_main(args)
        return 0

    args.passthrough = [
        f"--device={args.device}",
        f"--prompts={args.prompts}",
        f"--group-size={args.group_size}",
        f"--max-new-tokens={args.max_new_tokens}",
        f"--steps={args.steps}",
        f"--warmup={args.warmup}",
        f"--threads={args.threads}",
        f"--lr={args.lr}",
        f"--seed={args.seed}",
        f"--reward={args.reward}",
        f"--update-mode={args.update_mode}",
        f"--backend={args.backend}",
        f"--clock={args.clock}",
        f"--lora-rank={args.lora_rank}",
        *(["--no-filter"] if args.no_filter else []),
        *(["--two-pass"] if args.two_pass else []),
    ]
    if args.systems is None:
        args.systems = ",".join(LORA_SYSTEMS if args.lora else DEFAULT_SYSTEMS)
    systems = [s for s in args.systems.split(",") if s]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"--systems: unknown {sorted(unknown)}; choose from {SYSTEMS}")
    print(
        f"train step benchmark: device={args.device} model={args.model_config} P={args.prompts} "
        f"G={args.group_size} max_new_tokens={args.max_new_tokens} threads={args.threads} reward={args.reward} "
        f"update_mode={args.update_mode} backend={args.backend} two_pass={args.two_pass} filter_groups={not args.no_filter} clock={args.clock} "
        f"steps={args.steps}+{args.warmup} warmup x {args.rounds} rounds"
        + (f"; LoRA r={args.lora_rank}" if "conspo-conspo-lora" in systems else "")
        + f"; {platform.platform()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    with tempfile.TemporaryDirectory(prefix="conspo-bench-") as tmp:
        workdir = Path(tmp)
        model_dir = build_model_dir(args.model_config, workdir)
        results: dict[str, list[dict]] = {}
        for r in range(args.rounds):
            for system in systems if r % 2 == 0 else systems[::-1]:
                results.setdefault(system, []).append(run_child(system, args, model_dir, workdir))
    table = summarize(results, args)
    print()
    print_table(table, args)
    for row in table:
        if row["system"].startswith("conspo") and row["vs_trl"] == row["vs_trl"]:  # not NaN: TRL ran
            verdict = "meets" if row["vs_trl"] <= TARGET_RATIO else "misses"
            print(
                f"{row['system']}: {row['vs_trl']:.2f}x TRL's step time ({verdict} the {TARGET_RATIO}x target)"
            )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "table": table}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
