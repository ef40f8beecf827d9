"""The verl plugin, called the way verl calls it, checked against conspo's coupled ConSPO loss (CPU only)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

verl = pytest.importorskip("verl")
pytestmark = pytest.mark.verl

from omegaconf import OmegaConf  # noqa: E402
from tensordict import TensorDict  # noqa: E402
from transfer_queue import KVBatchMeta  # noqa: E402
from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn  # noqa: E402
from verl.trainer.ppo.v1 import get_trainer_cls, trainer_base  # noqa: E402
from verl.workers.config import ActorConfig, PolicyLossConfig  # noqa: E402

from conspo.integrations import verl as plugin  # noqa: E402
from conspo.objectives import RolloutBatch, get_objective  # noqa: E402

GROUP = 4


def make_rollouts(num_groups=3, max_len=7, seed=0):
    """Padded verl-style tensors: uid per row (groups shuffled), rewards on the last response token."""
    gen = torch.Generator().manual_seed(seed)
    num_rows = num_groups * GROUP
    lengths = torch.randint(2, max_len + 1, (num_rows,), generator=gen)
    response_mask = (torch.arange(max_len)[None, :] < lengths[:, None]).float()
    old_log_probs = -torch.rand(num_rows, max_len, generator=gen) * 3 * response_mask
    correct = torch.rand(num_rows, generator=gen) < 0.5
    correct[0::GROUP], correct[1::GROUP] = True, False  # every group has a positive and a negative
    token_level_rewards = torch.zeros(num_rows, max_len)
    token_level_rewards[torch.arange(num_rows), lengths - 1] = correct.float()
    order = torch.randperm(num_rows, generator=gen)  # verl reorders rows (balance_batch): groups scatter
    uid = np.array([f"prompt-{i // GROUP}" for i in range(num_rows)], dtype=object)[order.numpy()]
    return {
        "token_level_rewards": token_level_rewards[order],
        "response_mask": response_mask[order],
        "old_log_probs": old_log_probs[order],
        "uid": uid,
    }


def coupled_reference(rollouts, progress, **hparams):
    """Gradient of conspo's coupled loss w.r.t. the token log-probs, at the rollouts' own log-probs."""
    token_logps = rollouts["old_log_probs"].clone().requires_grad_(True)
    _, inverse = np.unique(rollouts["uid"].astype(str), return_inverse=True)
    batch = RolloutBatch(
        token_logps=token_logps,
        mask=rollouts["response_mask"].bool(),
        group_ids=torch.as_tensor(inverse),
        rewards=rollouts["token_level_rewards"].sum(-1),
    )
    loss = get_objective("conspo", **hparams)(batch, progress=progress).loss
    loss.backward()
    return loss.detach(), token_logps.grad


def actor_config():
    return ActorConfig(
        strategy="fsdp",
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        loss_agg_mode="seq-mean-token-mean",
        policy_loss=PolicyLossConfig(loss_mode="conspo_seq"),
    )


def run_policy_loss(rollouts, advantages, micro_batches):
    """Sum of the registered loss over micro-batches, with verl's global batch info, and its gradient."""
    config = actor_config()
    mask = rollouts["response_mask"]
    config.global_batch_info.update(
        dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=mask.shape[0], loss_scale_factor=None
    )
    log_prob = rollouts["old_log_probs"].clone().requires_grad_(True)  # on-policy: log_prob == old_log_probs
    loss_fn = get_policy_loss_fn(config.policy_loss.loss_mode)
    total = 0.0
    for rows in micro_batches:
        loss, metrics = loss_fn(
            old_log_prob=rollouts["old_log_probs"][rows],
            log_prob=log_prob[rows],
            advantages=advantages[rows],
            response_mask=mask[rows].bool(),
            loss_agg_mode=config.loss_agg_mode,
            config=config,
            rollout_is_weights=None,
        )
        assert metrics["actor/ppo_kl"] == pytest.approx(0.0, abs=1e-6)
        total = total + loss
    total.backward()
    return log_prob.grad


def test_verl_loads_the_plugin_through_its_external_module_hook():
    code = (
        "import verl\n"
        "from verl.trainer.ppo.core_algos import get_adv_estimator_fn, get_policy_loss_fn\n"
        "from verl.trainer.ppo.v1 import get_trainer_cls\n"
        "print(get_adv_estimator_fn('conspo').__module__, get_policy_loss_fn('conspo_seq').__module__,"
        " get_trainer_cls('conspo_sync').__name__)\n"
    )
    env = {**__import__("os").environ, "VERL_USE_EXTERNAL_MODULES": "conspo.integrations.verl"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == [
        "conspo.integrations.verl",
        "conspo.integrations.verl",
        "ConSPOTrainerSync",
    ]


@pytest.mark.parametrize(("global_step", "total_steps"), [(1, 10), (3, 10), (9, 10)])
def test_estimator_and_loss_give_the_coupled_conspo_gradient(global_step, total_steps):
    rollouts = make_rollouts(seed=global_step)
    config = OmegaConf.create({"adv_estimator": "conspo", "conspo": {"margin_max": 0.05}})
    advantages, returns = get_adv_estimator_fn("conspo")(
        token_level_rewards=rollouts["token_level_rewards"],
        response_mask=rollouts["response_mask"],
        index=rollouts["uid"],
        config=config,
        old_log_probs=rollouts["old_log_probs"],
        global_step=global_step,
        total_steps=total_steps,
    )
    assert torch.equal(advantages, returns)
    assert torch.all(advantages[rollouts["response_mask"] == 0] == 0)
    # Zero-sum per group (Eq. 11): the credit behaves like a GRPO advantage.
    per_row = advantages[:, 0]  # constant along each response; every response has a first token
    for uid in set(rollouts["uid"]):
        assert float(per_row[torch.as_tensor(rollouts["uid"] == uid)].sum()) == pytest.approx(0.0, abs=1e-5)

    progress = (global_step - 1) / total_steps
    _, expected = coupled_reference(rollouts, progress, margin_max=0.05)
    num_rows = rollouts["response_mask"].shape[0]
    split = [torch.arange(0, 5), torch.arange(5, 6), torch.arange(6, num_rows)]  # uneven micro-batches
    grad = run_policy_loss(rollouts, advantages, split)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-7)


def test_margin_follows_the_global_step():
    rollouts = make_rollouts(seed=4)
    estimator = get_adv_estimator_fn("conspo")
    kwargs = dict(
        token_level_rewards=rollouts["token_level_rewards"],
        response_mask=rollouts["response_mask"],
        index=rollouts["uid"],
        config={"conspo": {"margin_max": 0.5}},
        old_log_probs=rollouts["old_log_probs"],
        total_steps=10,
    )
    early, _ = estimator(global_step=1, **kwargs)
    late, _ = estimator(global_step=10, **kwargs)
    positive = rollouts["token_level_rewards"].sum(-1) > 0.5
    # A margin makes every positive look worse separated, so each positive gets more credit.
    assert torch.all(late[:, 0][positive] > early[:, 0][positive])


def test_estimator_without_old_log_probs_names_the_trainer_to_use():
    rollouts = make_rollouts()
    with pytest.raises(ValueError, match="trainer_mode=conspo_sync"):
        get_adv_estimator_fn("conspo")(
            token_level_rewards=rollouts["token_level_rewards"],
            response_mask=rollouts["response_mask"],
            index=rollouts["uid"],
        )


def test_bad_options_and_aggregation_are_refused():
    with pytest.raises(ValueError, match=r"algorithm.conspo: unknown option\(s\) \['temperature'\]"):
        plugin.VerlConSPOOptions.from_config({"conspo": {"temperature": 3}})
    with pytest.raises(ValueError, match="tau"):
        plugin.VerlConSPOOptions.from_config({"conspo": {"tau": -1.0}}).build_objective()
    with pytest.raises(ValueError, match="needs a score objective"):
        plugin.VerlConSPOOptions.from_config({"conspo": {"objective": "grpo"}}).build_objective()
    rollouts = make_rollouts()
    with pytest.raises(ValueError, match="use_kl_in_reward"):
        get_adv_estimator_fn("conspo")(
            token_level_rewards=rollouts["token_level_rewards"],
            response_mask=rollouts["response_mask"],
            index=rollouts["uid"],
            config={"use_kl_in_reward": True},
            old_log_probs=rollouts["old_log_probs"],
        )
    with pytest.raises(ValueError, match="loss_agg_mode=seq-mean-token-mean"):
        get_policy_loss_fn("conspo_seq")(
            old_log_prob=rollouts["old_log_probs"],
            log_prob=rollouts["old_log_probs"],
            advantages=torch.zeros_like(rollouts["old_log_probs"]),
            response_mask=rollouts["response_mask"].bool(),
            loss_agg_mode="token-mean",
            config=actor_config(),
        )


class FakeTransferQueue:
    """The two TransferQueue calls `_compute_advantage` makes, on an in-memory TensorDict of nested rows."""

    def __init__(self, rows: TensorDict):
        self.rows = rows
        self.written: dict[str, torch.Tensor] = {}

    def kv_batch_get(self, keys, partition_id, select_fields=None):
        return self.rows.select(*[name for name in select_fields if name in self.rows.keys()])  # noqa: SIM118 (TensorDict has no `in`)

    def kv_batch_put(self, keys, partition_id, fields=None, tags=None, data_parser=None):
        self.written.update({name: fields[name] for name in fields.keys()})  # noqa: SIM118
        return KVBatchMeta(keys=list(keys), tags=[{} for _ in keys], partition_id=partition_id)


def nested(padded, mask):
    return torch.nested.as_nested_tensor(
        [row[: int(m.sum())] for row, m in zip(padded, mask)], layout=torch.jagged
    )


def test_conspo_sync_trainer_feeds_old_log_probs_and_step_to_the_estimator(monkeypatch):
    rollouts = make_rollouts(seed=7)
    mask = rollouts["response_mask"]
    num_rows = mask.shape[0]
    store = FakeTransferQueue(
        TensorDict(
            {
                "uid": rollouts["uid"].tolist(),
                "response_mask": nested(mask, mask),
                "rm_scores": nested(rollouts["token_level_rewards"], mask),
                "old_log_probs": nested(rollouts["old_log_probs"], mask),
            },
            batch_size=num_rows,
        )
    )
    monkeypatch.setattr(trainer_base, "tq", store)
    trainer = object.__new__(get_trainer_cls("conspo_sync"))  # only the advantage stage is exercised
    trainer.config = OmegaConf.create(
        {
            "algorithm": {
                "adv_estimator": "conspo",
                "gamma": 1.0,
                "lam": 1.0,
                "use_kl_in_reward": False,
                "norm_adv_by_std_in_grpo": True,
                "conspo": {"margin_max": 0.05},
            },
            "actor_rollout_ref": {"rollout": {"n": GROUP}},
        }
    )
    trainer.global_steps, trainer.total_training_steps = 6, 10
    keys = [f"{uid}_0_{i}" for i, uid in enumerate(rollouts["uid"])]
    metrics: dict[str, float] = {}
    trainer._compute_advantage(KVBatchMeta(keys=keys, tags=[{} for _ in keys], partition_id="train"), metrics)

    written = store.written["advantages"].to_padded_tensor(0.0, output_size=mask.shape)
    expected, _ = get_adv_estimator_fn("conspo")(
        token_level_rewards=rollouts["token_level_rewards"],
        response_mask=mask,
        index=rollouts["uid"],
        config=trainer.config.algorithm,
        old_log_probs=rollouts["old_log_probs"],
        global_step=6,
        total_steps=10,
    )
    torch.testing.assert_close(written, expected)
    assert metrics["conspo/margin"] == pytest.approx(0.05)  # progress 0.5 is past the warm-up alpha = 0.3


@pytest.mark.slow
def test_compute_score_uses_the_process_isolated_verifier():
    right = plugin.compute_score("math", "so the answer is \\boxed{\\frac{1}{2}}", "0.5")
    wrong = plugin.compute_score("math", "so the answer is \\boxed{3}", "0.5", extra_info={"index": 0})
    assert right == {"score": 1.0, "acc": True, "pred": "\\frac{1}{2}"}
    assert (wrong["score"], wrong["acc"], wrong["pred"]) == (0.0, False, "3")


def test_verls_own_ppo_loss_with_conspo_seq_gives_the_coupled_gradient():
    """Through verl's actor loss entry point (`workers/utils/losses.py::ppo_loss`), micro-batch by micro-batch."""
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.losses import ppo_loss

    rollouts = make_rollouts(seed=11)
    mask = rollouts["response_mask"]
    num_rows = mask.shape[0]
    config = OmegaConf.create({"conspo": {}})
    advantages, _ = get_adv_estimator_fn("conspo")(
        token_level_rewards=rollouts["token_level_rewards"],
        response_mask=mask,
        index=rollouts["uid"],
        config=config,
        old_log_probs=rollouts["old_log_probs"],
        global_step=1,
        total_steps=10,
    )
    _, expected = coupled_reference(rollouts, progress=0.0)

    actor = actor_config()
    log_prob = rollouts["old_log_probs"].clone().requires_grad_(True)
    prompt_len = 3
    for rows in (torch.arange(0, 7), torch.arange(7, num_rows)):
        lengths = mask[rows].sum(-1).long()
        # Model output over prompt + response, unpadded; position p + t - 1 holds the response token t's log-prob.
        pieces = []
        for row, length in zip(rows.tolist(), lengths.tolist()):
            pieces += [log_prob.new_zeros(prompt_len - 1), log_prob[row, :length], log_prob.new_zeros(1)]
        data = TensorDict(
            {
                "prompts": nested(
                    torch.ones(len(rows), prompt_len, dtype=torch.long), torch.ones(len(rows), prompt_len)
                ),
                "responses": nested(torch.ones(len(rows), mask.shape[1], dtype=torch.long), mask[rows]),
                "response_mask": nested(mask[rows], mask[rows]),
                "old_log_probs": nested(rollouts["old_log_probs"][rows], mask[rows]),
                "advantages": nested(advantages[rows], mask[rows]),
            },
            batch_size=len(rows),
        )
        tu.assign_non_tensor(data, dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=num_rows)
        loss, _ = ppo_loss(actor, {"log_probs": torch.cat(pieces)}, data)
        loss.backward()
    torch.testing.assert_close(log_prob.grad, expected, rtol=1e-5, atol=1e-7)
