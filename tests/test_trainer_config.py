"""TrainConfig: YAML + overrides, validation before any compute, help/markdown reference, dry-run."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from conspo.config import (
    ConfigError,
    config_fields,
    config_to_dict,
    dump_yaml,
    load_config,
    markdown_reference,
)
from conspo.trainer.config import OptimConfig, TrainConfig, lr_at


@dataclasses.dataclass
class Inner:
    mode: Literal["a", "b"] = dataclasses.field(default="a", metadata={"help": "mode"})
    sizes: list[int] = dataclasses.field(default_factory=list, metadata={"help": "sizes"})


@dataclasses.dataclass
class Outer:
    name: str = dataclasses.field(metadata={"help": "required name"})
    inner: Inner = dataclasses.field(default_factory=Inner)


def _load(*overrides: str, path=None) -> TrainConfig:
    return load_config(TrainConfig, path, list(overrides))


def test_defaults_are_valid_and_round_trip_through_yaml(tmp_path):
    cfg = _load()
    assert cfg.objective.name == "conspo" and cfg.batch.group_size >= 2
    path = tmp_path / "run.yaml"
    path.write_text(dump_yaml(cfg))
    assert config_to_dict(_load(path=path)) == config_to_dict(cfg)


def test_yaml_then_overrides_with_type_coercion(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("steps: 7\nbatch:\n  group_size: 4\nobjective:\n  name: grpo\n")
    cfg = _load(
        "batch.group_size=6",
        "optim.lr=1e-5",
        "optim.betas=[0.8, 0.9]",
        "optim.max_grad_norm=null",
        "logging.tensorboard=false",
        "objective.params.clip_eps=0.3",
        path=path,
    )
    assert cfg.steps == 7  # from the file
    assert cfg.batch.group_size == 6  # override beats the file
    assert cfg.objective.name == "grpo"
    assert cfg.optim.lr == pytest.approx(1e-5) and isinstance(cfg.optim.lr, float)
    assert cfg.optim.betas == (0.8, 0.9)
    assert cfg.optim.max_grad_norm is None
    assert cfg.logging.tensorboard is False
    assert cfg.objective.params == {"clip_eps": 0.3}


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        (["batch.group_size=1"], "batch.group_size", ">= 2"),
        (["objective.params.tau=0"], "objective.params", "tau"),
        (["objective.params.tau=-1"], "objective.params", "tau"),
        (["objective.name=nope"], "objective.name", "nope"),
        (["batch.prompts_per_step=6", "batch.mini_batches=4"], "batch.mini_batches", "divide"),
        (
            ["batch.prompts_per_step=4", "batch.group_size=4", "batch.micro_batch_size=5"],
            "batch.micro_batch_size",
            "divide",
        ),
        (["data.train=/no/such/file.jsonl"], "data.train", "not found"),
        (["data.eval=missing/dir/eval.jsonl"], "data.eval", "not found"),
        (["rollout.temperature=0"], "rollout.temperature", "> 0"),
        (["optim.schedule=linear"], "optim.schedule", "one of"),
        (["batch.group_size=two"], "batch.group_size", "integer"),
        (["batch.grop_size=4"], "batch.grop_size", "unknown field"),
        (["nosuchsection.x=1"], "nosuchsection", "unknown field"),
        (["steps=0"], "steps", "positive"),
        (["batch.update_mode=coupled", "batch.micro_batch_size=4"], "batch.micro_batch_size", "coupled"),
    ],
)
def test_bad_values_name_the_field(overrides, field, words):
    with pytest.raises(ConfigError) as info:
        _load(*overrides)
    assert info.value.field == field
    assert words in str(info.value)
    assert str(info.value).startswith(field)


def test_process_count_checks():
    cfg = _load("batch.prompts_per_step=6")
    cfg.validate(num_processes=3)
    with pytest.raises(ConfigError, match="divisible by the number of processes") as info:
        cfg.validate(num_processes=4)
    assert info.value.field == "batch.prompts_per_step"
    with pytest.raises(ConfigError, match="single process"):
        _load("batch.update_mode=coupled", "batch.prompts_per_step=6").validate(num_processes=2)


def test_missing_config_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        _load(path=tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        _load(path=bad)
    with pytest.raises(ConfigError, match="key=value"):
        _load("steps")


def test_every_field_is_documented_in_help_and_reference():
    rows = config_fields(TrainConfig)
    assert len(rows) > 40
    undocumented = [path for path, _t, _d, help_ in rows if not help_]
    assert undocumented == []
    table = markdown_reference(TrainConfig)
    for path, *_ in rows:
        assert f"`{path}`" in table


def test_generic_helpers_on_a_small_dataclass():
    cfg = load_config(Outer, None, ["name=x", "inner.mode=b", "inner.sizes=[1, 2]"])
    assert cfg.inner.mode == "b" and cfg.inner.sizes == [1, 2]
    with pytest.raises(ConfigError, match="required") as info:
        load_config(Outer, None, ["inner.mode=b"])
    assert info.value.field == "name"
    with pytest.raises(ConfigError, match="is a section"):
        load_config(Outer, None, ["name=x", "inner=3"])
    with pytest.raises(ConfigError) as info:
        load_config(Outer, None, ["name=x", "inner.sizes=[1, x]"])
    assert info.value.field == "inner.sizes[1]"


def test_lr_schedule_warmup_then_cosine_to_floor():
    o = OptimConfig(schedule="cosine", warmup_steps=4, min_lr_ratio=0.1)
    values = [lr_at(o, s, 20) for s in range(20)]
    assert values[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert values[4] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values[4:], values[5:]))  # non-increasing after warm-up
    assert lr_at(o, 20, 20) == pytest.approx(0.1)
    assert lr_at(OptimConfig(warmup_steps=0), 7, 20) == 1.0  # constant


@pytest.mark.slow
def test_cli_dry_run_prints_plan_without_loading_weights(capsys):
    from conspo.cli import main

    assert main(["train", "--dry-run", "batch.group_size=4", "batch.prompts_per_step=4"]) == 0
    out = capsys.readouterr().out
    assert "4 prompts x G=4 = 16 rollouts" in out
    assert "parameters" in out and "memory per process" in out
    assert "group_size: 4" in out  # the resolved config


def test_cli_config_error_exits_2_with_field_name(capsys):
    from conspo.cli import main

    assert main(["train", "batch.group_size=1"]) == 2
    err = capsys.readouterr().err
    assert "batch.group_size" in err and ">= 2" in err


def test_docs_page_lists_every_field():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "trainer.md").read_text()
    missing = [path for path, *_ in config_fields(TrainConfig) if f"`{path}`" not in page]
    assert missing == [], "docs/trainer.md is missing config fields (regenerate with markdown_reference)"
    assert markdown_reference(TrainConfig) in page, "docs/trainer.md's config table is stale (defaults/help)"


def test_rollout_backends_match_the_rollout_layer_and_bad_ones_name_the_field():
    from conspo.config import ConfigError, load_config
    from conspo.rollout import GENERATION_BACKENDS
    from conspo.trainer.config import GENERATION_BACKENDS as CONFIG_BACKENDS
    from conspo.trainer.config import TrainConfig

    assert set(CONFIG_BACKENDS) == set(GENERATION_BACKENDS)
    assert load_config(TrainConfig, None, ["rollout.backend=kv_cache"]).rollout.backend == "kv_cache"
    assert load_config(TrainConfig, None, ["rollout.backend=vllm"]).rollout.backend == "vllm"  # vllm lazily
    with pytest.raises(ConfigError, match=r"rollout\.backend"):
        load_config(TrainConfig, None, ["rollout.backend=sglang"])
