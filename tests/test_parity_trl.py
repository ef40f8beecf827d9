"""conspo's baselines against TRL's own loss: `GRPOTrainer._compute_loss`, run for real on fixed inputs.

The trainer is a real `GRPOTrainer` (tiny testbed model, never called): its per-token log-prob method is
stubbed to return one fixed float64 leaf tensor, so `_compute_loss` runs TRL's code on exactly the inputs
conspo sees. For every `loss_type` conspo has a twin of (GSPO = `loss_type="grpo"` with
`importance_sampling_level="sequence"`), with the KL term off and on, loss and d(loss)/d(logp) must agree
to 1e-6 relative.

TRL's advantages (unbiased std + 1e-4, trl/trainer/grpo_trainer.py) and its counts (every row and token)
are fed to conspo's decomposed `loss(batch, credit, normalizer)` with `normalize_over="all"`, so the test
isolates the surrogate and its aggregation; the advantage convention itself is checked separately below.
Conventions that differ on purpose are listed in docs/objectives.md ("Conventions against the peers").
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("trl")

from datasets import Dataset  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402
from trl.trainer.utils import nanstd  # noqa: E402

from conspo.objectives import RolloutBatch, get_objective  # noqa: E402
from conspo.testbed import TinyModelConfig, build_char_tokenizer, build_tiny_model  # noqa: E402

GROUPS, G, T = 4, 6, 7
BETA = 0.04
TINY = TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_positions=32)


def make_inputs(seed: int = 0):
    """4 questions x 6 rollouts (one all-correct group), shuffled rows, float64, off-policy by ~30%."""
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.tensor(
        [[1, 0, 0, 1, 1, 0], [1, 1, 1, 1, 1, 1], [0, 0, 1, 0, 0, 0], [1, 1, 0, 1, 0.5, 1]],
        dtype=torch.float64,
    )
    lengths = torch.randint(1, T + 1, (GROUPS, G), generator=gen)
    logp = -2.0 * torch.rand(GROUPS, G, T, generator=gen, dtype=torch.float64)
    old = logp + 0.3 * torch.randn(GROUPS, G, T, generator=gen, dtype=torch.float64)
    ref = logp + 0.2 * torch.randn(GROUPS, G, T, generator=gen, dtype=torch.float64)
    return rewards, lengths, logp, old, ref


def trl_advantages(rewards: torch.Tensor) -> torch.Tensor:
    """TRL 1.16's group advantages (grpo_trainer.py, `_generate_and_score_completions`, scale_rewards="group")."""
    mean = torch.nanmean(rewards, dim=1, keepdim=True)
    std = nanstd(rewards, dim=1).unsqueeze(1)
    return (rewards - mean) / (std + 1e-4)


# (id, TRL config, conspo objective, conspo options)
CASES = [
    ("grpo", {"loss_type": "grpo", "epsilon": 0.2}, "grpo", {"clip_eps": 0.2}),
    (
        "grpo-delta",
        {"loss_type": "grpo", "epsilon": 0.2, "delta": 1.5},
        "grpo",
        {"clip_eps": 0.2, "delta": 1.5},
    ),
    ("dr_grpo", {"loss_type": "dr_grpo", "epsilon": 0.2}, "dr_grpo", {"clip_eps": 0.2, "max_length": T}),
    (
        "dapo",
        {"loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.28},
        "dapo",
        {"eps_low": 0.2, "eps_high": 0.28},
    ),
    (
        "dapo-delta",
        {"loss_type": "dapo", "epsilon": 0.2, "epsilon_high": 0.28, "delta": 1.6},
        "dapo",
        {"eps_low": 0.2, "eps_high": 0.28, "delta": 1.6},
    ),
    # bnpo divides by the micro-batch's own token count: DAPO's token mean when one call holds the step.
    (
        "bnpo",
        {"loss_type": "bnpo", "epsilon": 0.2, "epsilon_high": 0.28},
        "dapo",
        {"eps_low": 0.2, "eps_high": 0.28},
    ),
    # TRL's cispo epsilon_high is the weight cap itself; conspo's is the cap minus 1.
    ("cispo", {"loss_type": "cispo", "epsilon_high": 5.0}, "cispo", {"eps_high": 4.0}),
    ("cispo-tight", {"loss_type": "cispo", "epsilon_high": 1.2}, "cispo", {"eps_high": 0.2}),
    (
        "sapo",
        {"loss_type": "sapo", "sapo_temperature_pos": 1.0, "sapo_temperature_neg": 1.05},
        "sapo",
        {"tau_pos": 1.0, "tau_neg": 1.05},
    ),
    # GSPO's own 3e-4 / 4e-4 would clip every row of this batch; a wider range keeps both branches.
    (
        "gspo",
        {"loss_type": "grpo", "importance_sampling_level": "sequence", "epsilon": 0.05, "epsilon_high": 0.06},
        "gspo",
        {"eps_low": 0.05, "eps_high": 0.06},
    ),
]


def build_trainer(tmp_path, trl_options: dict, beta: float) -> GRPOTrainer:
    tokenizer = build_char_tokenizer()
    config = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        per_device_train_batch_size=2,
        num_generations=2,
        max_completion_length=T,
        beta=0.0,  # set below: a KL term makes __init__ load a reference model by name
        # TRL 1.16 multiplies the KL term by the importance ratio by default; conspo's KL is the plain k3.
        use_bias_correction_kl=False,
        **trl_options,
    )
    trainer = GRPOTrainer(
        model=build_tiny_model(tokenizer, TINY, seed=0),
        reward_funcs=lambda completions, **kwargs: [0.0] * len(completions),
        args=config,
        train_dataset=Dataset.from_dict({"prompt": ["1+1="] * 2}),
        processing_class=tokenizer,
    )
    # `_compute_loss` reads the KL coefficient from `self.beta` and the reference log-probs from its inputs.
    trainer.beta = beta
    return trainer


def trl_loss_and_grad(trainer: GRPOTrainer, logp, old, ref, mask, advantages):
    """TRL's `_compute_loss` on fixed log-probs: (loss, d loss / d logp)."""
    leaf = logp.clone().requires_grad_(True)
    rows, width = leaf.shape

    def fixed_logps(model, input_ids, attention_mask, logits_to_keep, *args, **kwargs):
        assert logits_to_keep == width
        return leaf, torch.zeros_like(leaf), None

    trainer._get_per_token_logps_and_entropies = fixed_logps
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    inputs = {
        "prompt_ids": torch.ones(rows, 2, dtype=torch.long),
        "prompt_mask": torch.ones(rows, 2, dtype=torch.long),
        "completion_ids": torch.ones(rows, width, dtype=torch.long),
        "completion_mask": mask.long(),
        "advantages": advantages,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    loss = trainer._compute_loss(trainer.model, inputs)
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def conspo_loss_and_grad(name, options, beta, logp, old, ref, mask, group_ids, rewards, advantages):
    """conspo's decomposed loss with TRL's advantages and every row counted (normalize_over="all")."""
    objective = get_objective(name, normalize_over="all", kl_coef=beta, **options)
    leaf = logp.clone().requires_grad_(True)
    batch = RolloutBatch(
        leaf, mask, group_ids, rewards, old_token_logps=old, ref_token_logps=ref if beta else None
    )
    credit = objective.credit(batch.detach())
    assert credit.normalizer["sequences"] == len(rewards)  # TRL's counts: every row ...
    assert credit.normalizer["tokens"] == mask.sum()  # ... and every token
    credit.rows["advantages"] = advantages
    loss = objective.loss(batch, credit, normalizer=credit.normalizer).loss
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


@pytest.mark.slow
@pytest.mark.parametrize("beta", [0.0, BETA], ids=["kl-off", "kl-on"])
@pytest.mark.parametrize("case_id,trl_options,name,options", CASES, ids=[c[0] for c in CASES])
def test_conspo_matches_trl_compute_loss(tmp_path, case_id, trl_options, name, options, beta):
    rewards, lengths, logp, old, ref = make_inputs()
    advantages = trl_advantages(rewards).flatten()
    perm = torch.randperm(GROUPS * G, generator=torch.Generator().manual_seed(1))  # shuffled rows
    group_ids = torch.arange(GROUPS).repeat_interleave(G)[perm]
    mask = (torch.arange(T)[None, :] < lengths.flatten()[:, None])[perm]
    logp, old, ref = (x.reshape(GROUPS * G, T)[perm] for x in (logp, old, ref))
    rewards, advantages = rewards.flatten()[perm], advantages[perm]

    trainer = build_trainer(tmp_path, trl_options, beta)
    theirs, grad_theirs = trl_loss_and_grad(trainer, logp, old, ref, mask, advantages)
    ours, grad_ours = conspo_loss_and_grad(
        name, options, beta, logp, old, ref, mask, group_ids, rewards, advantages
    )
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(grad_ours, grad_theirs, rtol=1e-6, atol=1e-12)
    assert grad_theirs.abs().sum() > 0


def test_trl_advantages_are_conspos_rescaled_by_the_std_convention():
    """TRL: (r - mean) / (unbiased std + 1e-4); conspo: population std, no epsilon. Same direction."""
    rewards = make_inputs()[0]
    theirs = trl_advantages(rewards)
    batch = RolloutBatch(
        torch.zeros(GROUPS * G, 1),
        torch.ones(GROUPS * G, 1),
        torch.arange(GROUPS).repeat_interleave(G),
        rewards.flatten(),
        labels=(rewards.flatten() > 0.5).long(),
    )
    ours = get_objective("grpo").credit(batch).advantages.view(GROUPS, G).double()
    population = rewards.std(dim=1, unbiased=False, keepdim=True)
    unbiased = rewards.std(dim=1, keepdim=True)
    torch.testing.assert_close(ours * population / (unbiased + 1e-4), theirs, rtol=1e-6, atol=1e-7)
    assert not torch.allclose(ours, theirs, rtol=1e-3)
