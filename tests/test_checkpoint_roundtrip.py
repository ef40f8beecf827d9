"""Checkpoints restore the exact training state: weights (tied too), optimizer, scheduler, RNG, data position."""

from __future__ import annotations

import functools
import json
import math
import random

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from conspo.trainer.checkpoint import (
    BEST_KEY,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)


def tiny_llama(seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=48,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def cosine_with_warmup(step: int, warmup: int = 2, total: int = 10) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup)))


def make_training(seed: int = 0):
    model = tiny_llama(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(cosine_with_warmup, total=10))
    return model, optimizer, scheduler


def train_step(model, optimizer, scheduler) -> None:
    # Random inputs drawn from the global torch RNG: a resumed run matches only if the RNG is restored.
    ids = torch.randint(0, model.config.vocab_size, (3, 8))
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def test_resume_matches_uninterrupted_run(tmp_path):
    torch.manual_seed(123)
    model, optimizer, scheduler = make_training()
    for _ in range(4):
        train_step(model, optimizer, scheduler)
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    torch.manual_seed(123)
    model, optimizer, scheduler = make_training()
    for _ in range(2):
        train_step(model, optimizer, scheduler)
    save_checkpoint(
        tmp_path, step=2, model=model, optimizer=optimizer, scheduler=scheduler, data_state={"cursor": 6}
    )
    # The "killed" process: scramble everything a fresh process would not have.
    torch.manual_seed(999)
    random.seed(999)
    model, optimizer, scheduler = make_training(seed=7)
    state = load_checkpoint(
        latest_checkpoint(tmp_path), model=model, optimizer=optimizer, scheduler=scheduler
    )
    assert state.step == 2 and state.data_state == {"cursor": 6}
    assert scheduler.last_epoch == 2
    for _ in range(2):
        train_step(model, optimizer, scheduler)

    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, reference[name], rtol=0, atol=0, msg=name)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied after loading


def test_rng_states_restored(tmp_path):
    model, optimizer, scheduler = make_training()
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    save_checkpoint(tmp_path, step=0, model=model, optimizer=optimizer, scheduler=scheduler, data_state={})
    expected = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    random.seed(10)
    np.random.seed(20)
    torch.manual_seed(30)
    load_checkpoint(tmp_path / "checkpoint-000000", model=model)
    got = (random.random(), np.random.rand(), np.random.randn(), torch.rand(3))
    assert got[:3] == expected[:3]
    assert torch.equal(got[3], expected[3])

    random.seed(10)
    before = random.getstate()
    load_checkpoint(tmp_path / "checkpoint-000000", model=model, restore_rng=False)
    assert random.getstate() == before


def test_files_load_without_unpickling(tmp_path):
    model, optimizer, scheduler = make_training()
    train_step(model, optimizer, scheduler)
    path = save_checkpoint(
        tmp_path, step=1, model=model, optimizer=optimizer, scheduler=scheduler, data_state={"epoch": 0}
    )
    for pt in sorted(path.glob("*.pt")):
        torch.load(pt, weights_only=True)  # raises on any pickled object
    assert {p.name for p in path.iterdir()} >= {
        "model.safetensors",
        "config.json",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pt",
        "checkpoint.json",
    }
    # The folder is also a loadable model directory.
    reloaded = LlamaForCausalLM.from_pretrained(path)
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(reloaded.state_dict()[name], tensor, msg=name)


class Schedule:
    """A callable-object lambda whose state holds an arbitrary class instance (LambdaLR saves its __dict__)."""

    def __init__(self):
        self.helper = object.__new__(Schedule)

    def __call__(self, step):
        return 1.0


def test_scheduler_with_unloadable_state_is_refused_at_save(tmp_path):
    model, optimizer, _ = make_training()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, Schedule())
    with pytest.raises(CheckpointError, match="scheduler.pt"):
        save_checkpoint(
            tmp_path, step=1, model=model, optimizer=optimizer, scheduler=scheduler, data_state={}
        )
    assert list_checkpoints(tmp_path) == []
    assert [p.name for p in tmp_path.iterdir()] == []  # the temporary folder is gone too


def test_keep_last_rotates_but_keeps_best_and_newest(tmp_path):
    model, optimizer, scheduler = make_training()
    for step in range(1, 7):
        extra = {BEST_KEY: True, "eval_acc": 0.5} if step == 2 else {}
        save_checkpoint(
            tmp_path,
            step=step,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            data_state={"cursor": step},
            extra=extra,
            keep_last=2,
        )
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 5, 6]
    # A newer best takes over the protection.
    save_checkpoint(
        tmp_path,
        step=7,
        model=model,
        optimizer=None,
        scheduler=None,
        data_state={},
        extra={BEST_KEY: True},
        keep_last=1,
    )
    assert [s for s, _ in list_checkpoints(tmp_path)] == [7]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000007"]


def test_non_main_process_writes_nothing(tmp_path):
    model, optimizer, scheduler = make_training()
    path = save_checkpoint(
        tmp_path,
        step=3,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        data_state={},
        is_main_process=False,
    )
    assert path == tmp_path / "checkpoint-000003"
    assert not tmp_path.exists() or list(tmp_path.iterdir()) == []


def test_bad_inputs_are_named(tmp_path):
    model, optimizer, scheduler = make_training()
    with pytest.raises(TypeError, match="data_state must be JSON-serializable"):
        save_checkpoint(
            tmp_path,
            step=1,
            model=model,
            optimizer=optimizer,
            scheduler=scheduler,
            data_state={"t": torch.ones(2)},
        )
    path = save_checkpoint(tmp_path, step=1, model=model, optimizer=None, scheduler=None, data_state={})
    with pytest.raises(CheckpointError, match="optimizer.pt"):
        load_checkpoint(path, model=model, optimizer=optimizer)
    other = torch.nn.Linear(3, 3)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        load_checkpoint(path, model=other)
    with pytest.raises(CheckpointError, match="run folder"):
        load_checkpoint(tmp_path, model=model)


def test_saving_the_same_step_again_replaces_it(tmp_path):
    model, optimizer, scheduler = make_training()
    save_checkpoint(
        tmp_path, step=4, model=model, optimizer=optimizer, scheduler=scheduler, data_state={"v": 1}
    )
    save_checkpoint(
        tmp_path, step=4, model=model, optimizer=optimizer, scheduler=scheduler, data_state={"v": 2}
    )
    state = load_checkpoint(
        tmp_path / "checkpoint-000004", model=model, optimizer=optimizer, scheduler=scheduler
    )
    assert state.data_state == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-000004"]
    manifest = json.loads((tmp_path / "checkpoint-000004" / "checkpoint.json").read_text())
    assert manifest["step"] == 4
