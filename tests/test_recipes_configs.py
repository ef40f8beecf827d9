"""Shipped recipes: each passes `conspo train --dry-run`, matches its generator, shares its setting, and the
accelerate configs and the eval preset file say what the code does."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from conspo.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"
TRAIN_RECIPES = sorted(p for p in RECIPES.glob("*/*.yaml") if p.parent.name not in ("accelerate", "eval"))


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_there_is_a_recipe_for_every_paper_setting():
    folders = {p.parent.name for p in TRAIN_RECIPES}
    assert {
        "r1-qwen-1.5b-deepscaler",
        "r1-qwen-1.5b-deepscaler-ablations",
        "r1-qwen-1.5b-dapo17k",
        "qwen3-4b-base-deepscaler",
        "r1-qwen-7b-deepscaler",
        "r1-llama-8b-deepscaler",
    } <= folders
    table1 = {p.stem for p in (RECIPES / "r1-qwen-1.5b-deepscaler").glob("*.yaml")}
    assert table1 == {"conspo", "grpo", "dapo", "dr_grpo", "disco", "gmpo", "cispo", "sapo"}
    assert len(list((RECIPES / "r1-qwen-1.5b-deepscaler-ablations").glob("*.yaml"))) == 4


@pytest.mark.parametrize("recipe", TRAIN_RECIPES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_recipe_passes_dry_run(recipe, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["train", "--config", str(recipe), "--dry-run"]) == 0
    out = capsys.readouterr().out
    cfg = yaml.safe_load(recipe.read_text())
    assert f"RL steps             {cfg['steps']}" in out
    assert f"objective            {cfg['objective']['name']}" in out
    # offline (tests never reach the hub): the shape comes from the built-in table of published shapes
    assert "memory per process" in out and "built-in table of published shapes" in out, out


def test_published_shapes_give_the_published_parameter_counts():
    from conspo.trainer.config import TrainConfig
    from conspo.trainer.plan import PUBLISHED_SHAPES, build_plan

    published = {  # billions, from the model cards
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B": 1.78,
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B": 7.62,
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B": 32.8,
        "deepseek-ai/DeepSeek-R1-Distill-Llama-8B": 8.03,
        "Qwen/Qwen3-4B-Base": 4.02,
        "meta-llama/Llama-3.2-3B-Instruct": 3.21,
    }
    recipe_models = {yaml.safe_load(p.read_text())["model"]["name_or_path"] for p in TRAIN_RECIPES}
    assert recipe_models <= set(PUBLISHED_SHAPES) == set(published)
    for name, billions in published.items():
        cfg = TrainConfig()
        cfg.model.name_or_path = name
        cfg.data.eval = None
        plan = build_plan(cfg)
        assert plan.num_parameters == pytest.approx(billions * 1e9, rel=0.01), name
        assert plan.memory_gib is not None and "built-in table" in plan.note


def test_recipes_match_their_generator():
    assert _script("gen_recipes").main(["--check"]) == 0


def test_paper_values_in_the_main_recipe():
    cfg = yaml.safe_load((RECIPES / "r1-qwen-1.5b-deepscaler" / "conspo.yaml").read_text())
    assert cfg["model"]["name_or_path"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"
    assert cfg["data"]["train"] == "deepscaler"
    assert cfg["optim"]["lr"] == 2e-6 and cfg["rollout"]["temperature"] == 1.0
    assert cfg["rollout"]["max_new_tokens"] == 8192 and cfg["batch"]["filter_groups"] is True
    assert cfg["objective"]["params"] == {
        "tau": 10.0,
        "margin": "cosine",
        "margin_max": 0.01,
        "margin_warmup": 0.3,
    }
    # 4 epochs of DeepScaleR (40,315 problems) at 128 prompts per step
    assert cfg["steps"] * cfg["batch"]["prompts_per_step"] == pytest.approx(4 * 40_315, rel=0.01)
    assert (cfg["eval"]["temperature"], cfg["eval"]["top_p"], cfg["eval"]["every"]) == (0.6, 0.95, 100)
    qwen3 = yaml.safe_load((RECIPES / "qwen3-4b-base-deepscaler" / "conspo.yaml").read_text())
    assert qwen3["rollout"]["max_new_tokens"] == 4096
    assert qwen3["steps"] * qwen3["batch"]["prompts_per_step"] == pytest.approx(2 * 40_315, rel=0.01)


def test_every_unstated_value_is_marked_inferred():
    text = (RECIPES / "r1-qwen-1.5b-deepscaler" / "conspo.yaml").read_text()
    for key in (
        "group_size",
        "prompts_per_step",
        "mini_batches",
        "max_grad_norm",
        "weight_decay",
        "top_p: 1.0",
    ):
        line = next(line for line in text.splitlines() if key in line)
        assert "INFERRED" in line, line


def _setting(path: Path) -> dict:
    cfg = yaml.safe_load(path.read_text())
    cfg.pop("objective")
    cfg.pop("run_name")
    cfg["batch"].pop("dynamic_sampling")  # DAPO's own dynamic sampling is part of that baseline
    cfg["batch"].pop("max_sampling_tries", None)
    for key in ("overlong_max_len", "overlong_buffer_len", "overlong_penalty_factor"):  # DAPO's own shaping
        cfg["reward"].pop(key, None)
    return cfg


def test_objectives_of_a_setting_share_everything_else():
    for folder in {p.parent for p in TRAIN_RECIPES}:
        settings = [_setting(p) for p in sorted(folder.glob("*.yaml"))]
        assert all(s == settings[0] for s in settings), folder.name


def test_dapo_recipes_use_dapos_overlong_reward_shaping():
    for path in TRAIN_RECIPES:
        cfg = yaml.safe_load(path.read_text())
        reward = cfg["reward"]
        if cfg["objective"]["name"] != "dapo":
            assert not any(key.startswith("overlong") for key in reward), path
            continue
        budget = cfg["rollout"]["max_new_tokens"]  # L_max = the response budget, L_cache = half of it
        assert reward["overlong_max_len"] == budget, path
        assert reward["overlong_buffer_len"] == budget // 2 and reward["overlong_penalty_factor"] == 1.0, path
        assert "not in conspo" not in path.read_text()
    from conspo.config import load_config
    from conspo.rewards import overlong_penalty
    from conspo.trainer.config import TrainConfig

    r = load_config(TrainConfig, RECIPES / "r1-qwen-1.5b-deepscaler" / "dapo.yaml", []).reward
    assert (r.overlong_max_len, r.overlong_buffer_len, r.overlong_penalty_factor) == (8192, 4096, 1.0)
    penalty = [overlong_penalty(n, r.overlong_max_len, r.overlong_buffer_len) for n in (4096, 6144, 8192)]
    assert penalty == [0.0, -0.5, -1.0]


def test_ablations_change_one_thing_of_full_conspo():
    full = yaml.safe_load((RECIPES / "r1-qwen-1.5b-deepscaler" / "conspo.yaml").read_text())["objective"]
    changed = {}
    for p in (RECIPES / "r1-qwen-1.5b-deepscaler-ablations").glob("*.yaml"):
        params = yaml.safe_load(p.read_text())["objective"]["params"]
        changed[p.stem] = {k: v for k, v in params.items() if full["params"].get(k) != v}
    assert changed == {
        "conspo-linear-credit": {"credit": "linear"},
        "conspo-clipped-ratio-score": {"score": "clipped_ratio", "clip_eps": 0.2},
        "conspo-no-margin": {"margin": "none"},
        "conspo-fixed-margin": {"margin": "fixed"},
    }


@pytest.mark.parametrize("name", ["ddp", "fsdp", "zero2", "zero3"])
def test_accelerate_configs_load_and_state_their_launch_command(name):
    from accelerate.commands.config.config_args import load_config_from_file

    path = RECIPES / "accelerate" / f"{name}.yaml"
    cfg = load_config_from_file(str(path))
    expected = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED"}[name]
    assert cfg.distributed_type.value == expected
    if name.startswith("zero"):
        assert cfg.deepspeed_config["zero_stage"] == int(name[-1])
    assert f"accelerate launch --config_file recipes/accelerate/{name}.yaml" in path.read_text()


def test_eval_recipe_is_the_paper_preset():
    from conspo.eval.presets import get_preset

    doc = yaml.safe_load((RECIPES / "eval" / "paper.yaml").read_text())
    preset = get_preset(doc["preset"])
    assert (doc["temperature"], doc["top_p"], doc["max_new_tokens"], doc["default_n"]) == (
        preset.temperature,
        preset.top_p,
        preset.max_new_tokens,
        preset.default_n,
    )
    assert [(b["name"], b["n"], b["metric"]) for b in doc["benchmarks"]] == [
        (b.name, b.n, b.metric_label) for b in preset.benchmarks
    ]
