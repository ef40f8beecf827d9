"""Train a conspo recipe through TRL: ``ConSPOTrainer`` under accelerate, with FSDP or DeepSpeed ZeRO sharding.

``conspo train`` replicates the model on every process (data parallelism, no sharding), so the 7B / 8B / 32B
settings, whose fp32 weights + AdamW states alone exceed an 80 GB GPU, train through TRL instead: its
GRPOTrainer is a transformers Trainer and honours accelerate's FSDP and ZeRO configs. This script reads the same
recipe (and the same ``key=value`` overrides) as ``conspo train``, maps it onto ``ConSPOConfig``
(``conspo.integrations.trl.conspo_config_from_train_config``: what maps, what is refused and why), loads the
problems with ``conspo.data.load_problems`` + ``render_prompt``, and rewards with conspo's verifier.

    # one node, 8 GPUs, ZeRO-3 (recipes/accelerate/zero3.yaml; fsdp.yaml and zero2.yaml work the same way)
    accelerate launch --config_file recipes/accelerate/zero3.yaml --num_processes 8 \
        examples/train_trl.py --config recipes/r1-qwen-7b-deepscaler/conspo.yaml

    # four nodes of 8 GPUs: the same command on every node, machine_rank 0..3
    accelerate launch --config_file recipes/accelerate/zero3.yaml \
        --num_machines 4 --machine_rank $RANK --main_process_ip $MASTER_ADDR --main_process_port 29500 \
        --num_processes 32 examples/train_trl.py --config recipes/r1-qwen-7b-deepscaler/conspo.yaml

    # the ConSPOConfig a recipe maps to, without loading anything (set WORLD_SIZE to the launch's GPU count)
    WORLD_SIZE=32 python examples/train_trl.py --config recipes/r1-qwen-7b-deepscaler/conspo.yaml --print-config

    # seconds on a CPU: the testbed policy, one process, no accelerate
    python examples/train_trl.py --config recipes/r1-qwen-1.5b-deepscaler/conspo.yaml model.name_or_path=testbed \
        data.train=testbed data.template=testbed device=cpu steps=2 batch.prompts_per_step=2 batch.group_size=4 \
        batch.mini_batches=1 batch.micro_batch_size=4 rollout.max_new_tokens=16 reward.num_workers=1

``batch.prompts_per_step`` must be divisible by the process count. The DAPO recipes use dynamic sampling, which
TRL does not have: the script refuses them unless ``batch.dynamic_sampling=false``. Periodic evaluation is not
run here; evaluate the checkpoints (``<output_dir>/<run_name>/checkpoint-*``, ``final``) with ``conspo eval``.
"""

from __future__ import annotations

import argparse
import os

import torch
from datasets import Dataset
from transformers import AutoTokenizer

from conspo.config import load_config
from conspo.data import load_problems, render_prompt
from conspo.integrations.trl import (
    ConSPOTrainer,
    conspo_config_from_train_config,
    peft_config_from_train_config,
)
from conspo.rewards import build_reward_fn
from conspo.trainer.config import TESTBED, TrainConfig

SHOWN = (  # --print-config: the ConSPOConfig fields the recipe decides
    "output_dir", "max_steps", "num_generations", "per_device_train_batch_size", "gradient_accumulation_steps",
    "steps_per_generation", "learning_rate", "lr_scheduler_type", "max_grad_norm", "temperature", "top_p",
    "max_completion_length", "objective", "tau", "margin", "margin_max", "margin_warmup", "objective_kwargs",
    "conspo_mode", "activation_checkpointing", "bf16", "model_init_kwargs", "seed",
)  # fmt: skip


def load_model_path(cfg: TrainConfig) -> str:
    """The model folder or hub id; 'testbed' = the warm-started tiny policy (built once, cached, lock-protected)."""
    if cfg.model.name_or_path != TESTBED:
        return cfg.model.name_or_path
    from conspo.testbed import ensure_testbed_policy

    kwargs = {"task": cfg.data.testbed_task}
    if cfg.data.testbed_difficulty is not None:
        kwargs["difficulty"] = cfg.data.testbed_difficulty
    return str(ensure_testbed_policy(**kwargs))


def load_dataset(cfg: TrainConfig, tokenizer) -> Dataset:
    """Columns 'prompt' (rendered with the recipe's template) and 'answer' (passed to the reward by TRL)."""
    d = cfg.data
    if d.train == TESTBED:
        name = f"testbed:{d.testbed_task}:{d.testbed_difficulty or ''}:{d.max_train_problems or 2000}"
        problems = load_problems(name)
    else:
        problems = load_problems(d.train, split=d.split, data_dir=d.data_dir, limit=d.max_train_problems)
    template = d.template or ("testbed" if d.train == TESTBED else "default")
    return Dataset.from_dict(
        {
            "prompt": [render_prompt(p.problem, tokenizer, template) for p in problems],
            "answer": [p.answer for p in problems],
        }
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="a conspo train YAML config, e.g. recipes/<setting>/conspo.yaml")
    parser.add_argument("overrides", nargs="*", help="conspo train key=value overrides (batch.group_size=8)")
    parser.add_argument("--print-config", action="store_true", help="print the mapped ConSPOConfig and exit")
    args = parser.parse_args(argv)

    cfg = load_config(TrainConfig, args.config, args.overrides)
    num_processes = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch / torchrun
    trl_args = conspo_config_from_train_config(cfg, num_processes)
    if args.print_config:
        print(f"processes {num_processes}; one generation batch = {cfg.rollouts_per_step} rollouts")
        for key in SHOWN:
            value = getattr(trl_args, key)
            print(f"{key:<28} {getattr(value, 'value', value)}")  # enums by their value
        peft_config = peft_config_from_train_config(cfg)
        if peft_config is not None:
            targets = peft_config.target_modules
            targets = sorted(targets) if isinstance(targets, (set, list)) else targets
            print(f"{'peft_config':<28} LoraConfig(r={peft_config.r}, lora_alpha={peft_config.lora_alpha}, "
                  f"lora_dropout={peft_config.lora_dropout}, target_modules={targets})")  # fmt: skip
        return 0

    threads = cfg.num_threads or (1 if cfg.model.name_or_path == TESTBED else None)
    if threads:
        torch.set_num_threads(threads)
    model_path = load_model_path(cfg)
    tokenizer = AutoTokenizer.from_pretrained(
        cfg.model.tokenizer or model_path, trust_remote_code=cfg.model.trust_remote_code
    )
    dataset = load_dataset(cfg, tokenizer)
    # conspo's process-isolated verifier (cfg.reward is a conspo.rewards.RewardConfig: workers, timeout, custom
    # verifier); TRL passes the 'answer' column by name, which RewardFunction accepts.
    reward_fn = build_reward_fn(cfg.reward)
    try:
        trainer = ConSPOTrainer(
            model=model_path,  # TRL loads it (ZeRO-3 / FSDP aware) with trl_args.model_init_kwargs
            reward_funcs=reward_fn,
            args=trl_args,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config_from_train_config(cfg, model_path),  # model.lora (None: full fine-tuning)
        )
        trainer.train()
    finally:
        reward_fn.close()
    if cfg.checkpoint.save_final:
        final = os.path.join(trl_args.output_dir, "final")
        trainer.save_model(final)
        if trainer.accelerator.is_main_process:
            tokenizer.save_pretrained(final)
            print(f"final policy: {final}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
