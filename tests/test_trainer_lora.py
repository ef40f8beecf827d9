"""LoRA (``model.lora``, through peft): config checks, what is trained, the KL reference, checkpoints, merging,
evaluation of the adapter folder, gradient checkpointing and the dry-run plan.

Most tests share one short LoRA run (`lora_run`): a random tiny Llama, the parity verifier, 3 steps with a KL
term at a large learning rate (so the adapter clearly moves), a checkpoint after every step and a merged final
model. The learning test on the warm-started testbed policy is in ``test_trainer_lora_learning.py``.
"""

from __future__ import annotations

import json

import pytest
import torch

from conspo.config import ConfigError, load_config
from conspo.trainer.config import TrainConfig
from conspo.trainer.loop import Trainer
from trainer_support import ParityVerifier, save_random_policy, train_config

LORA = [
    "steps=3",
    "model.lora.r=4",
    "objective.params.kl_coef=0.05",
    "optim.lr=1e-2",
    "optim.warmup_steps=0",
    "eval.at_start=false",
    "checkpoint.every=1",
    "checkpoint.keep_last=3",
    "checkpoint.merge_lora=true",
]


# ---- config: checked before any model loads ------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("model.lora.r=-1", "model.lora.r"),
        ("model.lora.alpha=0", "model.lora.alpha"),
        ("model.lora.dropout=1.0", "model.lora.dropout"),
        ("model.lora.target_modules=[]", "model.lora.target_modules"),
        ("model.lora.modules_to_save=['']", "model.lora.modules_to_save"),
    ],
)
def test_bad_lora_values_are_refused_naming_the_field(override, field):
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, None, ["model.lora.r=8", override])
    assert info.value.field == field


def test_merge_lora_needs_lora_and_a_final_model():
    with pytest.raises(ConfigError) as info:
        load_config(TrainConfig, None, ["checkpoint.merge_lora=true"])
    assert info.value.field == "checkpoint.merge_lora" and "model.lora.r" in str(info.value)
    with pytest.raises(ConfigError) as info:
        load_config(
            TrainConfig, None, ["model.lora.r=8", "checkpoint.merge_lora=true", "checkpoint.save_final=false"]
        )
    assert info.value.field == "checkpoint.merge_lora"


def test_lora_is_off_by_default_and_its_defaults_cover_every_projection():
    from conspo.trainer.lora import lora_target_modules

    cfg = load_config(TrainConfig)
    assert cfg.model.lora.r == 0 and not cfg.model.lora.enabled
    on = load_config(TrainConfig, None, ["model.lora.r=16"]).model.lora
    assert on.scale_alpha == 32.0  # alpha None = 2 x r
    assert set(lora_target_modules(on, "qwen2")) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }
    assert lora_target_modules(on, "an-unknown-type") == "all-linear"


def test_a_module_the_model_lacks_is_refused_naming_the_field(tmp_path, random_policy):
    from conspo.trainer.plan import build_plan

    cfg = train_config(tmp_path, "model.lora.r=4", "model.lora.target_modules=[qkv]", policy=random_policy)
    with pytest.raises(ConfigError) as info:
        build_plan(cfg)  # the dry run builds the adapter on the meta device
    assert info.value.field == "model.lora.target_modules" and "q_proj" in str(info.value)


# ---- one short LoRA run ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """(trainer after run(), result, policy folder, rows of the last step's credit phase)."""
    import conspo.rewards
    import conspo.trainer.step as step

    tmp = tmp_path_factory.mktemp("lora")
    policy = save_random_policy(tmp / "policy")
    seen = []
    original = step.sampling_logps

    def recording(trainer, rows):
        original(trainer, rows)
        seen.append(rows)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(conspo.rewards.reward_fn, "MathVerifier", ParityVerifier)
        mp.setattr(step, "sampling_logps", recording)
        trainer = Trainer(train_config(tmp, *LORA, policy=policy, run_name="lora"))
        result = trainer.run()
    assert seen, "no step reached the credit phase"
    return trainer, result, policy, seen[-1]


def _base(policy):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(policy).eval()


def _ids(vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(4, vocab, (3, 12), generator=torch.Generator().manual_seed(seed))


@pytest.mark.slow
def test_only_the_adapter_is_trained(lora_run):
    trainer, _, policy, _ = lora_run
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    in_optimizer = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    assert in_optimizer and all("lora_" in names[id(p)] for p in in_optimizer)
    trainable = {id(p) for p in trainer.model.parameters() if p.requires_grad}
    assert {id(p) for p in in_optimizer} == trainable
    assert sum(p.numel() for p in in_optimizer) < 0.25 * sum(p.numel() for p in trainer.model.parameters())

    # The base weights are those of the folder, bit for bit; the adapter moved away from B = 0.
    base = _base(policy).state_dict()
    trained = {
        k.replace(".base_layer", ""): v
        for k, v in trainer.model.get_base_model().state_dict().items()
        if "lora_" not in k
    }
    assert set(trained) == set(base)
    assert all(torch.equal(trained[k], base[k]) for k in base)
    lora_b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert any(p.abs().max() > 0 for p in lora_b)


@pytest.mark.slow
def test_kl_reference_is_the_base_model_without_a_copy(lora_run):
    from conspo.trainer.lora import AdapterDisabled
    from conspo.trainer.rows import score_rows

    trainer, _, policy, rows = lora_run
    assert isinstance(trainer.ref_model, AdapterDisabled) and trainer.ref_model.policy is trainer.model
    assert trainer.model.training  # the reference's eval-mode call put the policy back in train mode
    # The last step's reference log-probs (computed in the step, after two updates) are the base model's.
    assert rows.ref_token_logps is not None
    base_logps, mask, _ = score_rows(_base(policy), rows, chunk=len(rows), device=torch.device("cpu"))
    assert torch.allclose(rows.ref_token_logps, base_logps, atol=1e-6)
    # ... and not the adapted policy's: the comparison would mean nothing if the adapter had not moved.
    trainer.model.eval()
    try:
        policy_logps, _, _ = score_rows(trainer.model, rows, chunk=len(rows), device=torch.device("cpu"))
    finally:
        trainer.model.train()
    assert (policy_logps - base_logps)[mask].abs().max() > 1e-3


@pytest.mark.slow
def test_final_folder_holds_the_adapter_and_a_merged_model_with_the_same_outputs(lora_run):
    from transformers import AutoModelForCausalLM

    trainer, result, policy, _ = lora_run
    final = result.final_dir
    assert (final / "adapter_model.safetensors").is_file() and (final / "adapter_config.json").is_file()
    assert not (final / "model.safetensors").exists()
    assert json.loads((final / "adapter_config.json").read_text())["base_model_name_or_path"] == str(policy)

    merged = AutoModelForCausalLM.from_pretrained(final / "merged").eval()  # plain transformers
    assert not any("lora" in k for k in merged.state_dict())
    ids = _ids(merged.config.vocab_size)
    trainer.model.eval()
    try:
        with torch.no_grad():
            adapted = trainer.model(input_ids=ids).logits
            base = _base(policy)(input_ids=ids).logits
            got = merged(input_ids=ids).logits
    finally:
        trainer.model.train()
    assert (adapted - base).abs().max() > 1e-3  # the adapter changes the outputs ...
    assert torch.allclose(got, adapted, atol=1e-5)  # ... and the merged model has that change


@pytest.mark.slow
def test_checkpoints_hold_the_adapter_and_its_optimizer_state(lora_run, tmp_path):
    from safetensors.torch import load_file

    from conspo.trainer.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint

    trainer, result, policy, _ = lora_run
    ckpt = latest_checkpoint(result.run_dir)
    assert ckpt is not None and ckpt.name == "checkpoint-000003"
    assert (ckpt / "adapter_model.safetensors").is_file() and not (ckpt / "model.safetensors").exists()
    saved = load_file(ckpt / "adapter_model.safetensors")
    n_adapter = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    assert sum(t.numel() for t in saved.values()) == n_adapter  # the adapter alone, not the base
    state = torch.load(ckpt / "optimizer.pt", weights_only=True)
    moments = sum(s["exp_avg"].numel() for s in state["state"].values())
    assert moments == n_adapter

    # A model without the adapter cannot take it: a clear error, not a silent partial load.
    with pytest.raises(CheckpointError, match="LoRA adapter"):
        load_checkpoint(ckpt, model=_base(policy), restore_rng=False)
    # The same adapter settings load it back exactly.
    from conspo.trainer.lora import adapter_state_dict, apply_lora

    fresh = apply_lora(trainer.cfg.model.lora, _base(policy))
    load_checkpoint(ckpt, model=fresh, restore_rng=False)
    got, want = adapter_state_dict(fresh), adapter_state_dict(trainer.model)
    assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.slow
def test_eval_loads_the_adapter_folder_on_its_base_and_the_merged_folder(lora_run):
    from conspo.eval.models import adapter_base, check_model_loads, expand_models, load_model

    _, result, policy, _ = lora_run
    final = result.final_dir
    assert adapter_base(final) == str(policy) and adapter_base(final / "merged") is None
    [spec] = expand_models([str(final)])
    assert spec.tokenizer == str(final)
    config, _ = check_model_loads(spec)
    assert config.model_type == "llama"
    adapter_model, _ = load_model(spec, device="cpu")
    [merged_spec] = expand_models([str(final / "merged")])
    merged_model, _ = load_model(merged_spec, device="cpu")
    ids = _ids(config.vocab_size, seed=1)
    with torch.no_grad():
        assert torch.allclose(
            adapter_model(input_ids=ids).logits, merged_model(input_ids=ids).logits, atol=1e-5
        )
    # A run folder lists its LoRA checkpoints and final (adapter folders) like full-weight ones.
    labels = [s.label for s in expand_models([str(result.run_dir)])]
    assert labels[-1] == "lora/final" and "lora/checkpoint-000003" in labels


# ---- gradient checkpointing and the dry run ------------------------------------------------------------


def test_gradient_checkpointing_gives_the_adapter_the_same_gradients(tmp_path, random_policy):
    from conspo.trainer.distributed import Distributed
    from conspo.trainer.setup import load_policy

    grads = []
    for checkpointing in (False, True):
        cfg = train_config(
            tmp_path, "model.lora.r=4", f"model.gradient_checkpointing={checkpointing}", policy=random_policy
        )
        torch.manual_seed(0)  # the same adapter initialisation (A is drawn at random)
        model, _, _ = load_policy(cfg, Distributed("cpu"))
        for name, p in model.named_parameters():
            if "lora_B" in name:  # B = 0 at init: give it values, so that A gets a gradient too
                torch.nn.init.normal_(p, std=0.1)
        logits = model(input_ids=_ids(model.config.vocab_size), use_cache=False).logits
        torch.log_softmax(logits, -1)[..., 5].sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.requires_grad})
    plain, checkpointed = grads
    assert set(plain) == set(checkpointed) and all(g is not None for g in checkpointed.values())
    assert all(checkpointed[n].abs().max() > 0 for n in checkpointed if "lora_A" in n)
    assert all(torch.allclose(plain[n], checkpointed[n], atol=1e-6) for n in plain)


def test_dry_run_reports_trainable_parameters_and_lora_memory(tmp_path, random_policy):
    from conspo.trainer.distributed import Distributed
    from conspo.trainer.plan import build_plan, format_plan
    from conspo.trainer.setup import load_policy

    overrides = ["model.lora.r=4", "objective.params.kl_coef=0.05"]
    cfg = train_config(tmp_path, *overrides, policy=random_policy)
    plan = build_plan(cfg)
    model, _, _ = load_policy(cfg, Distributed("cpu"))
    assert plan.trainable_parameters == sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert plan.num_parameters == sum(p.numel() for p in model.get_base_model().parameters()) - sum(
        p.numel() for n, p in model.get_base_model().named_parameters() if "lora_" in n
    )
    assert "adapter+grads+adamw" in plan.memory_breakdown and "reference model" not in plan.memory_breakdown
    text = format_plan(plan)
    assert "trainable" in text and "adapter disabled" in text

    full = build_plan(train_config(tmp_path, "objective.params.kl_coef=0.05", policy=random_policy))
    assert full.trainable_parameters == full.num_parameters
    assert "reference model" in full.memory_breakdown
    assert plan.memory_gib < full.memory_gib


@pytest.mark.slow
def test_conspo_eval_runs_on_the_adapter_folder(lora_run, tmp_path):
    from conspo.cli import main

    _, result, _, _ = lora_run
    out = tmp_path / "eval"
    argv = [
        "eval",
        "--model",
        str(result.final_dir),
        "--benchmarks",
        "testbed:add",
        "--limit",
        "2",
        "--n",
        "1",
    ]
    argv += ["--max-new-tokens", "4", "--verifier-workers", "1", "--output-dir", str(out), "--quiet"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    [model] = report["models"]
    assert model["model"] == str(result.final_dir) and model["benchmarks"]["testbed:add"]["problems"] == 2


def test_lora_without_peft_installed_says_how_to_get_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"conspo\[peft\]") as info:
        load_config(TrainConfig, None, ["model.lora.r=8"])
    assert info.value.field == "model.lora.r"
    load_config(TrainConfig)  # without LoRA peft is not needed


def test_scoring_a_peft_model_skips_the_lm_head_on_the_prompt(random_policy):
    """completion_logits passes logits_to_keep through peft's forward (and the reference's) to the base model."""
    from conspo.rollout.logprobs import _accepts_logits_to_keep
    from conspo.trainer.config import LoRAConfig
    from conspo.trainer.lora import AdapterDisabled, apply_lora

    model = apply_lora(LoRAConfig(r=4), _base(random_policy))
    assert _accepts_logits_to_keep(model) and _accepts_logits_to_keep(AdapterDisabled(model))
    ids = _ids(model.config.vocab_size)
    with torch.no_grad():
        kept = model(input_ids=ids, logits_to_keep=4).logits
        full = model(input_ids=ids).logits
    assert kept.shape[1] == 4 and torch.allclose(kept, full[:, -4:], atol=1e-6)
