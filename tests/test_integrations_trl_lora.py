"""The TRL route with LoRA: ``model.lora`` becomes ConSPOTrainer's ``peft_config`` (examples/train_trl.py)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

from conspo.config import load_config  # noqa: E402
from conspo.integrations.trl import peft_config_from_train_config  # noqa: E402
from conspo.trainer.config import TrainConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes" / "r1-qwen-7b-deepscaler" / "conspo.yaml"
SCRIPT = ROOT / "examples" / "train_trl.py"
PROJECTIONS = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}


def test_model_lora_becomes_the_peft_config():
    from peft import LoraConfig

    assert (
        peft_config_from_train_config(load_config(TrainConfig, RECIPE)) is None
    )  # no LoRA: full fine-tuning
    cfg = load_config(TrainConfig, RECIPE, ["model.lora.r=16", "model.lora.dropout=0.05"])
    peft_config = peft_config_from_train_config(cfg)  # the 7B model's type from the published shapes, offline
    assert isinstance(peft_config, LoraConfig)
    assert (peft_config.r, peft_config.lora_alpha, peft_config.lora_dropout) == (16, 32.0, 0.05)
    assert set(peft_config.target_modules) == PROJECTIONS and peft_config.task_type == "CAUSAL_LM"
    chosen = load_config(
        TrainConfig,
        RECIPE,
        ["model.lora.r=8", "model.lora.target_modules=[q_proj,v_proj]", "model.lora.alpha=8"],
    )
    peft_config = peft_config_from_train_config(chosen)
    assert set(peft_config.target_modules) == {"q_proj", "v_proj"} and peft_config.lora_alpha == 8.0


def test_print_config_shows_the_peft_config(capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("train_trl", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("WORLD_SIZE", "8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        argv = ["--config", str(RECIPE), "--print-config", "logging.tensorboard=false", "model.lora.r=16"]
        assert module.main(argv) == 0
    assert "LoraConfig(r=16, lora_alpha=32.0" in capsys.readouterr().out


@pytest.mark.slow
def test_the_script_trains_a_lora_adapter_on_the_testbed(tmp_path, testbed_policy_dir):
    """Two optimizer steps of ConSPOTrainer with peft_config: the final folder is an adapter on the testbed."""
    from test_integrations_trl_recipe import TINY

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("WORLD_SIZE", None)
    recipe = ROOT / "recipes" / "r1-qwen-1.5b-deepscaler" / "conspo.yaml"
    command = [sys.executable, str(SCRIPT), "--config", str(recipe), *TINY, f"output_dir={tmp_path}"]
    command += ["model.lora.r=4", "optim.lr=1e-3"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    final = tmp_path / "r1-qwen-1.5b-deepscaler-conspo" / "final"
    assert (final / "adapter_model.safetensors").is_file() and not (final / "model.safetensors").exists()
    adapter = json.loads((final / "adapter_config.json").read_text())
    assert adapter["r"] == 4 and set(adapter["target_modules"]) == PROJECTIONS
    assert Path(adapter["base_model_name_or_path"]) == testbed_policy_dir
    assert result.stderr.count("'conspo/margin'") + result.stdout.count("'conspo/margin'") == 2
