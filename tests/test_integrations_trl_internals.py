"""The TRL internals ConSPOTrainer overrides are still there, config validation, and import isolation."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

pytest.importorskip("trl")

from trl import GRPOTrainer  # noqa: E402

from conspo.integrations import trl as conspo_trl  # noqa: E402
from conspo.integrations.trl import _OVERRIDDEN, ConSPOConfig, ConSPOTrainer, check_trl_internals  # noqa: E402


def test_installed_trl_has_every_internal_the_trainer_relies_on():
    check_trl_internals()  # raises RuntimeError otherwise


@pytest.mark.parametrize("name", sorted(_OVERRIDDEN))
def test_overrides_keep_trl_signatures(name):
    """Every override accepts exactly what TRL passes (a TRL-side change shows up in the check above)."""
    ours = ConSPOTrainer.__dict__[name]
    base = tuple(inspect.signature(getattr(GRPOTrainer, name)).parameters)
    assert tuple(inspect.signature(ours).parameters) == base


def test_changed_signature_fails_loudly(monkeypatch):
    def _compute_loss(self, model, inputs, num_items_in_batch):  # a hypothetical TRL 1.17 signature
        return None

    monkeypatch.setattr(GRPOTrainer, "_compute_loss", _compute_loss)
    with pytest.raises(RuntimeError, match=r"_compute_loss.*now takes more than"):
        check_trl_internals()


def test_new_required_parameter_of_a_called_method_fails_loudly(monkeypatch):
    def _get_per_token_logps_and_entropies(
        self,
        model,
        input_ids,
        attention_mask,
        logits_to_keep,
        batch_size=None,
        compute_entropy=False,
        compute_aux_loss=False,
        *,
        position_ids,
    ):
        return None

    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies", _get_per_token_logps_and_entropies)
    with pytest.raises(RuntimeError, match="new required parameters"):
        check_trl_internals()


def test_renamed_parameter_fails_loudly(monkeypatch):
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids):
        return None

    monkeypatch.setattr(GRPOTrainer, "_calculate_rewards", _calculate_rewards)
    with pytest.raises(RuntimeError, match="no longer starts with"):
        check_trl_internals()


def test_removed_method_fails_loudly(monkeypatch):
    monkeypatch.delattr(GRPOTrainer, "_calculate_rewards")
    with pytest.raises(RuntimeError, match="_calculate_rewards is gone"):
        check_trl_internals()


def test_prepare_inputs_without_shuffle_then_split_fails_loudly(monkeypatch):
    def _prepare_inputs(self, generation_batch):
        return generation_batch

    monkeypatch.setattr(GRPOTrainer, "_prepare_inputs", _prepare_inputs)
    with pytest.raises(RuntimeError, match="no longer shuffles"):
        check_trl_internals()


def test_removed_helper_fails_loudly(monkeypatch):
    monkeypatch.delattr(conspo_trl._grpo_module, "split_tensor_dict")
    with pytest.raises(RuntimeError, match="split_tensor_dict is gone"):
        check_trl_internals()


def _config(tmp_path, **overrides) -> ConSPOConfig:
    options = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", num_generations=4)
    options["per_device_train_batch_size"] = 4
    options.update(overrides)
    return ConSPOConfig(**options)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"beta": 0.04}, "beta=0.04"),
        ({"use_liger_kernel": True}, "use_liger_kernel"),
        ({"top_entropy_quantile": 0.2}, "top_entropy_quantile"),
        ({"entropy_coef": 0.01}, "entropy_coef"),
        ({"conspo_mode": "fused"}, "conspo_mode='fused'"),
        ({"tau": 0.0}, "tau"),
        ({"margin": "linear"}, "margin"),
        ({"objective": "nope"}, "unknown objective 'nope'"),
        ({"objective_kwargs": {"credit": "softmax"}}, "credit_kind"),
        ({"objective_kwargs": '{"credit": '}, "not valid JSON"),
        ({"objective_kwargs": {"kl_coef": 0.1}}, "kl_coef > 0"),
        (
            {"conspo_mode": "coupled", "per_device_train_batch_size": 2, "steps_per_generation": 2},
            "multiple of",
        ),
    ],
)
def test_config_rejects_bad_values_with_a_clear_message(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        _config(tmp_path, **overrides)


def test_config_builds_the_objective_it_describes(tmp_path):
    config = _config(tmp_path, tau=5.0, margin="fixed", objective_kwargs='{"credit": "linear"}')
    objective = config.build_objective()
    assert (objective.name, objective.tau, objective.margin, objective.credit_kind) == (
        "conspo",
        5.0,
        "fixed",
        "linear",
    )
    assert config.disable_dropout  # no-grad scores must equal the training forward's


def test_trainer_refuses_a_plain_grpo_config():
    from trl import GRPOConfig

    with pytest.raises(TypeError, match="ConSPOConfig"):
        ConSPOTrainer(model=None, reward_funcs=[], args=GRPOConfig(output_dir="x", use_cpu=True, bf16=False))


@pytest.mark.slow
def test_core_package_never_imports_trl_or_verl():
    code = (
        "import sys, conspo, conspo.objectives, conspo.rewards, conspo.trainer, conspo.integrations\n"
        "print(sorted(m for m in ('trl', 'verl') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
