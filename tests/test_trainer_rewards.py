"""The trainer scores through the reward-function interface: a custom verifier from the config decides the
rewards, a bad one fails before compute, shaping changes rewards but never labels; train/eval overlap warns."""

from __future__ import annotations

import json
import logging
import textwrap

import pytest
import torch

from conspo.config import ConfigError, load_config
from conspo.rewards import Verdict, overlong_penalty
from conspo.trainer.config import TrainConfig
from conspo.trainer.loop import PhaseTimer, Trainer
from trainer_support import SMALL, make_trainer, train_config

# Every run here: SMALL without the final save.
RUN = [*SMALL, "checkpoint.save_final=false"]

# A user's verifier module: even-length completions are correct (mixed groups from a random policy).
PARITY_MODULE = textwrap.dedent(
    """
    def score(completion, answer):
        return len(completion) % 2 == 0
    """
)


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    """``trainer_parity_reward:score`` importable here and in the verifier's workers (they inherit sys.path)."""
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "trainer_parity_reward.py").write_text(PARITY_MODULE)
    monkeypatch.syspath_prepend(str(folder))
    return "trainer_parity_reward:score"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_custom_verifier_from_yaml_decides_the_rewards_of_a_training_run(
    tmp_path, random_policy, user_module
):
    config = tmp_path / "run.yaml"
    config.write_text(f"steps: 2\nseed: 3\nreward:\n  custom_verifier: '{user_module}'\n  num_workers: 1\n")
    cfg = train_config(tmp_path, policy=random_policy, run_name="custom", base=RUN, config_file=config)
    assert cfg.reward.custom_verifier == user_module
    trainer = Trainer(cfg)
    seen: list[tuple[list[str], list[Verdict]]] = []
    pids: list[int] = []
    score = trainer.reward_fn.score

    def recording_score(prompts, completions, answers, **kwargs):
        verdicts = score(prompts, completions, answers, **kwargs)
        seen.append((list(completions), verdicts))
        pids.extend(trainer.reward_fn.verifier.pids)
        return verdicts

    trainer.reward_fn.score = recording_score
    result = trainer.run()
    assert result.steps_done == 2 and len(seen) == 2  # one scoring call per step (no dynamic sampling)
    rows = [json.loads(line) for line in (tmp_path / "custom" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "reward/accuracy" in r]
    for (texts, verdicts), row in zip(seen, train_rows):
        parity = [len(t) % 2 == 0 for t in texts]
        assert [v.reason for v in verdicts] == ["custom"] * len(texts)  # the user's function decided
        assert [v.correct for v in verdicts] == parity
        assert row["reward/accuracy"] == pytest.approx(sum(parity) / len(parity))
        assert row["reward/mean"] == pytest.approx(sum(parity) / len(parity))
    assert any(r.get("step/skipped") == 0.0 for r in train_rows), "the parity labels must give an update"
    # One pool for the run, closed at the end: no verifier process outlives it.
    assert pids and len(set(pids)) == 2  # the zygote and one worker
    assert [p for p in set(pids) if _alive(p)] == []


def test_custom_verifier_as_an_override(user_module):
    cfg = load_config(
        TrainConfig, None, [f"reward.custom_verifier={user_module}", "reward.format_reward=0.5"]
    )
    assert cfg.reward.custom_verifier == user_module and cfg.reward.format_reward == 0.5


@pytest.mark.parametrize(
    "path", ["no_such_module_for_conspo:score", "trainer_parity_reward:missing", "not a path"]
)
def test_bad_custom_verifier_fails_before_any_model_loads(tmp_path, monkeypatch, user_module, path, capsys):
    import conspo.trainer.loop

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the config was checked")

    monkeypatch.setattr(conspo.trainer.loop, "load_policy", no_model)
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, None, [f"reward.custom_verifier={path}"])
    assert info.value.field == "reward.custom_verifier"
    assert str(info.value).startswith("reward.custom_verifier")
    # set after loading (Python use): the Trainer checks it before loading anything
    cfg = load_config(TrainConfig, None, [f"output_dir={tmp_path}"])
    cfg.reward.custom_verifier = path
    with pytest.raises(ConfigError, match="reward.custom_verifier"):
        Trainer(cfg)
    from conspo.cli import main

    assert main(["train", f"output_dir={tmp_path}", f"reward.custom_verifier={path}"]) == 2
    assert "reward.custom_verifier" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("reward.timeout=0", "reward.timeout"),
        ("reward.num_workers=0", "reward.num_workers"),
        ("reward.think=before", "reward.think"),
        ("reward.overlong_max_len=8", "reward.overlong_max_len"),  # buffer 4096 > L_max
    ],
)
def test_reward_config_errors_name_the_trainer_field(override, field, capsys):
    from conspo.cli import main

    assert main(["train", override]) == 2
    assert capsys.readouterr().err.startswith(f"conspo train: config error: {field}:")
    cfg = load_config(TrainConfig)
    key, value = override.split("=")
    setattr(cfg.reward, key.split(".")[1], int(value) if value.isdigit() else value)
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    assert info.value.field == field


def test_overlong_penalty_changes_rewards_but_not_labels(tmp_path, random_policy, parity_math_verifier):
    shaping = ["reward.overlong_max_len=8", "reward.overlong_buffer_len=4"]
    plain = make_trainer(tmp_path, random_policy, "seed=3", run_name="plain", base=RUN)
    shaped = make_trainer(tmp_path, random_policy, "seed=3", *shaping, run_name="shaped", base=RUN)
    rows_plain, _ = plain._sample_round(0, 0, PhaseTimer())
    rows_shaped, _ = shaped._sample_round(0, 0, PhaseTimer())
    lengths = rows_plain.lengths
    assert torch.equal(lengths, rows_shaped.lengths)  # the same rollouts
    penalty = torch.tensor([overlong_penalty(int(n), 8, 4) for n in lengths])
    assert (penalty < 0).any() and (penalty == 0).any()
    torch.testing.assert_close(rows_shaped.rewards, rows_plain.rewards + penalty)
    assert torch.equal(rows_shaped.labels, rows_plain.labels)  # labels come from Verdict.correct
    assert torch.equal(rows_plain.labels, (rows_plain.rewards > 0.5).long())
    # a correct but overlong completion: reward <= 0.5, still a positive
    assert ((rows_shaped.labels == 1) & (rows_shaped.rewards <= 0.5)).any()
    # and the update sees the same labels (the objectives' own fallback would flip them)
    batch = shaped._rollout_batch(
        rows_shaped, torch.zeros(rows_shaped.tokens.completion_mask.shape), rows_shaped.tokens.completion_mask
    )
    assert torch.equal(batch.labels, rows_plain.labels)
    plain.close()
    shaped.close()


def test_train_eval_overlap_is_warned_once_with_the_count(tmp_path, random_policy, caplog):
    train = [{"id": f"t{i}", "problem": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(6)]
    evals = [
        {"id": "e0", "problem": "What is 1 + 1?", "answer": "2"},  # = t1
        {"id": "e1", "problem": "what is  3 + 3?", "answer": "6"},  # = t3 after normalization
        {"id": "e2", "problem": "What is 10 + 10?", "answer": "20"},
    ]
    for name, items in (("train.jsonl", train), ("eval.jsonl", evals)):
        (tmp_path / name).write_text("".join(json.dumps(x) + "\n" for x in items))
    overrides = [
        *RUN,
        f"model.name_or_path={random_policy}",
        f"output_dir={tmp_path}",
        "run_name=overlap",
        f"data.train={tmp_path / 'train.jsonl'}",
        f"data.eval={tmp_path / 'eval.jsonl'}",
    ]
    with caplog.at_level(logging.WARNING, logger="conspo.trainer"):
        trainer = Trainer(load_config(TrainConfig, None, overrides))
    warnings = [r.getMessage() for r in caplog.records if "training set" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].startswith("2 of 3 evaluation problems also appear in the training set")
    assert trainer.eval_overlap == 2
    caplog.clear()
    clean = [o.replace("eval.jsonl", "clean.jsonl") for o in overrides]
    (tmp_path / "clean.jsonl").write_text(json.dumps(evals[2]) + "\n")
    with caplog.at_level(logging.WARNING, logger="conspo.trainer"):
        assert Trainer(load_config(TrainConfig, None, clean)).eval_overlap == 0
    assert not [r for r in caplog.records if "training set" in r.getMessage()]
