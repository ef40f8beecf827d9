"""A conspo recipe through TRL: `conspo_config_from_train_config` and `examples/train_trl.py` (CPU)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("trl")

from conspo.config import ConfigError, load_config  # noqa: E402
from conspo.integrations.trl import (  # noqa: E402
    TRAIN_CONFIG_MAPPING,
    TRAIN_CONFIG_NOT_MAPPED,
    TRAIN_CONFIG_REFUSED,
    conspo_config_from_train_config,
)
from conspo.trainer.config import TrainConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
SCRIPT = ROOT / "examples" / "train_trl.py"
# The 1.5B recipe shrunk to the CPU testbed: one process, 2 prompts x G=4 per step.
TINY = [
    "model.name_or_path=testbed",
    "model.gradient_checkpointing=false",
    "data.train=testbed",
    "data.template=testbed",
    "data.eval=null",
    "device=cpu",
    "steps=2",
    "batch.prompts_per_step=2",
    "batch.group_size=4",
    "batch.mini_batches=1",
    "batch.micro_batch_size=4",
    "rollout.max_new_tokens=16",
    "reward.num_workers=1",
    "logging.tensorboard=false",
    "logging.progress=false",
    "checkpoint.every=0",
]


def recipe(path: str, *overrides: str) -> TrainConfig:
    return load_config(TrainConfig, RECIPES / path, list(overrides))


def mapped(cfg: TrainConfig, num_processes: int, **overrides):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # stale-credit warning of mini_batches > 1, transformers deprecations
        return conspo_config_from_train_config(cfg, num_processes, report_to="none", **overrides)


def test_the_7b_conspo_recipe_lands_in_the_right_fields():
    cfg = recipe("r1-qwen-7b-deepscaler/conspo.yaml")
    args = mapped(cfg, num_processes=32)
    # batch: 128 prompts x G=8 over 32 processes, 4 mini-batches -> 8 rows per process per optimizer step,
    # micro-batches of 2 rows -> 4 accumulation steps, 16 micro-steps per generation batch
    assert (args.num_generations, args.per_device_train_batch_size) == (8, 2)
    assert (args.gradient_accumulation_steps, args.steps_per_generation) == (4, 16)
    assert args.per_device_train_batch_size * 32 * args.steps_per_generation == 128 * 8
    assert args.max_steps == cfg.steps * 4 == 5040
    assert (args.learning_rate, args.adam_beta1, args.adam_beta2, args.weight_decay) == (
        2e-6,
        0.9,
        0.999,
        0.0,
    )
    assert (args.lr_scheduler_type.value, args.warmup_steps, args.max_grad_norm) == ("constant", 0, 1.0)
    assert (args.temperature, args.top_p, args.top_k, args.max_completion_length) == (1.0, 1.0, 0, 8192)
    assert (args.objective, args.tau, args.margin, args.margin_max, args.margin_warmup) == (
        "conspo",
        10.0,
        "cosine",
        0.01,
        0.3,
    )
    assert args.objective_kwargs is None and args.conspo_mode == "decomposed" and args.beta == 0.0
    assert args.model_init_kwargs == {"dtype": "float32", "trust_remote_code": False}
    assert args.activation_checkpointing is True and args.seed == 0
    assert (args.save_steps, args.save_total_limit) == (400, 2)  # every 100 RL steps = 400 optimizer steps
    assert Path(args.output_dir) == Path("runs") / "r1-qwen-7b-deepscaler-conspo"
    assert args.build_objective().name == "conspo"


def test_other_objectives_pass_their_params_through():
    linear = mapped(recipe("r1-qwen-1.5b-deepscaler-ablations/conspo-linear-credit.yaml"), 8)
    assert linear.objective == "conspo" and linear.objective_kwargs == {"credit": "linear"}
    grpo = mapped(recipe("r1-qwen-7b-deepscaler/grpo.yaml"), 32)
    assert grpo.objective == "grpo" and grpo.objective_kwargs == {"clip_eps": 0.2}
    # a recipe leaving a ConSPO field out gets the objective's default, not a stale one
    cfg = recipe("r1-qwen-1.5b-deepscaler/conspo.yaml")
    cfg.objective.params = {"tau": 5.0}
    assert mapped(cfg, 8).margin_max == 0.01 and mapped(cfg, 8).tau == 5.0
    cosine = recipe("r1-qwen-1.5b-deepscaler/conspo.yaml", "optim.schedule=cosine", "optim.min_lr_ratio=0.1")
    args = mapped(cosine, 8)
    assert args.lr_scheduler_type.value == "cosine_with_min_lr"
    assert args.lr_scheduler_kwargs == {"min_lr_rate": 0.1}


def test_unsupported_values_are_refused_together_with_what_to_set():
    dapo = recipe("r1-qwen-7b-deepscaler/dapo.yaml", "stop_after=5")
    with pytest.raises(ValueError) as caught:
        mapped(dapo, 32)
    message = str(caught.value)
    assert "batch.dynamic_sampling=true" in message and "set batch.dynamic_sampling=false" in message
    assert "stop_after" in message and "set reward.overlong_max_len=null" in message  # DAPO's shaping
    shaped = recipe("r1-qwen-1.5b-deepscaler/conspo.yaml", "reward.format_reward=0.1")
    with pytest.raises(ValueError, match="reward.overlong_max_len / reward.format_reward"):
        mapped(shaped, 8)
    # turned off as the message says, DAPO maps (clip-higher through objective_kwargs)
    off = ["batch.dynamic_sampling=false", "reward.overlong_max_len=null"]
    args = mapped(recipe("r1-qwen-7b-deepscaler/dapo.yaml", *off), 32)
    assert args.objective == "dapo" and args.objective_kwargs == {"eps_low": 0.2, "eps_high": 0.28}
    # the batch must split over the processes as conspo train requires
    with pytest.raises(ConfigError, match="batch.prompts_per_step"):
        mapped(recipe("r1-qwen-7b-deepscaler/conspo.yaml"), 48)


def test_the_mapping_tables_name_every_train_config_field():
    from conspo.config import config_fields

    tables = [*TRAIN_CONFIG_MAPPING, *TRAIN_CONFIG_NOT_MAPPED, *TRAIN_CONFIG_REFUSED]
    named = {key.strip() for entry in tables for key in entry.split(",")}
    for key, *_ in config_fields(TrainConfig):
        assert key in named or f"{key.split('.')[0]}.*" in named, key


@pytest.mark.parametrize(
    "path",
    sorted(p for p in RECIPES.glob("*/*.yaml") if p.parent.name not in ("accelerate", "eval")),
    ids=lambda p: f"{p.parent.name}/{p.stem}",
)
def test_every_shipped_recipe_maps(path):
    cfg = load_config(TrainConfig, path, [])
    off = [] if not cfg.batch.dynamic_sampling else ["batch.dynamic_sampling=false"]
    if cfg.reward.overlong_max_len is not None:  # DAPO's overlong reward shaping
        off.append("reward.overlong_max_len=null")
    cfg = load_config(TrainConfig, path, off)
    args = mapped(cfg, num_processes=8)
    assert args.objective == cfg.objective.name
    assert args.build_objective().name == cfg.objective.name


def test_docs_and_the_large_recipes_give_the_launch_command():
    launch = "accelerate launch --config_file recipes/accelerate/zero3.yaml"
    script = "examples/train_trl.py --config recipes/r1-qwen-7b-deepscaler/conspo.yaml"
    for doc in ("guide.md", "integrations.md"):
        text = (ROOT / "docs" / doc).read_text()
        assert launch in text and script in text and "--print-config" in text, doc
    for folder in ("r1-qwen-7b-deepscaler", "r1-llama-8b-deepscaler", "r1-qwen-32b-deepscaler"):
        for path in (RECIPES / folder).glob("*.yaml"):
            assert f"examples/train_trl.py --config recipes/{folder}/{path.name}" in path.read_text(), path
    assert "my_trl_script" not in "".join(p.read_text() for p in (RECIPES / "accelerate").glob("*.yaml"))


def test_print_config_shows_the_mapping_without_loading_a_model(capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("train_trl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("WORLD_SIZE", "32")
    config = str(RECIPES / "r1-qwen-7b-deepscaler" / "conspo.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert module.main(["--config", config, "--print-config", "logging.tensorboard=false"]) == 0
    out = capsys.readouterr().out
    assert "processes 32; one generation batch = 1024 rollouts" in out
    assert "steps_per_generation         16" in out and "max_completion_length        8192" in out


@pytest.mark.slow
def test_the_script_trains_the_testbed_from_a_recipe(tmp_path, testbed_policy_dir):
    """`python examples/train_trl.py --config <recipe> <overrides>`: two optimizer steps, no accelerate."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("WORLD_SIZE", None)
    command = [
        sys.executable,
        str(SCRIPT),
        "--config",
        str(RECIPES / "r1-qwen-1.5b-deepscaler" / "conspo.yaml"),
        *TINY,
        f"output_dir={tmp_path}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    final = tmp_path / "r1-qwen-1.5b-deepscaler-conspo" / "final"
    assert f"final policy: {final}" in result.stdout
    assert (final / "config.json").exists() and (final / "tokenizer_config.json").exists()
    # both optimizer steps ran through ConSPOTrainer's credit path (its metrics are logged per step)
    assert result.stderr.count("'conspo/margin'") + result.stdout.count("'conspo/margin'") == 2
