"""The registry (names, hyperparameters, spec strings, clear errors), RolloutBatch validation, import isolation."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from conspo.objectives import (
    ConSPO,
    Objective,
    RolloutBatch,
    get_objective,
    list_objectives,
    parse_objective_spec,
    register_objective,
)

NAMES = {"conspo", "grpo", "dr_grpo", "dapo", "gspo", "gmpo", "cispo", "sapo", "disco"}


def test_every_paper_objective_is_registered():
    assert set(list_objectives()) >= NAMES
    for name in NAMES:
        objective = get_objective(name)
        assert objective.name == name
        assert isinstance(objective.needs_old_logps, bool) and objective.needs_ref_logps is False


def test_paper_defaults():
    conspo = get_objective("conspo")
    assert (conspo.tau, conspo.margin_max, conspo.margin_warmup, conspo.margin) == (10.0, 0.01, 0.3, "cosine")
    assert (conspo.credit_kind, conspo.score_kind) == ("infonce", "logprob")
    dapo = get_objective("dapo")
    assert (dapo.eps_low, dapo.eps_high) == (0.2, 0.28)
    gspo = get_objective("gspo")
    assert (gspo.eps_low, gspo.eps_high) == (3e-4, 4e-4)
    assert get_objective("gmpo").eps_low == 0.4
    sapo = get_objective("sapo")
    assert (sapo.tau_pos, sapo.tau_neg) == (1.0, 1.05)
    disco = get_objective("disco")
    assert (disco.tau, disco.delta, disco.beta, disco.negatives) == (10.0, 1e-4, 1e3, "lse")
    token_level = {name for name in NAMES if get_objective(name).normalize_by == "tokens"}
    assert token_level == {"dapo", "cispo"}


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown objective 'ppo'.*conspo.*grpo"):
        get_objective("ppo")


def test_unknown_hyperparameter_is_named_with_valid_ones():
    with pytest.raises(ValueError, match=r"'temperature'.*valid: .*tau"):
        get_objective("conspo", temperature=1.0)
    with pytest.raises(ValueError, match=r"'eps'.*eps_high"):
        get_objective("dapo:eps=0.3")


@pytest.mark.parametrize(
    "name,hparams,field",
    [
        ("conspo", {"tau": 0.0}, "tau"),
        ("conspo", {"tau": -1.0}, "tau"),
        ("conspo", {"margin_warmup": 0.0}, "margin_warmup"),
        ("conspo", {"margin_warmup": 1.2}, "margin_warmup"),
        ("conspo", {"margin_max": -0.01}, "margin_max"),
        ("conspo", {"credit": "softmax"}, "credit_kind"),
        ("conspo", {"margin": "linear"}, "margin"),
        ("conspo", {"clip_eps": 0.0}, "clip_eps"),
        ("grpo", {"clip_eps": 0.0}, "clip_eps"),
        ("grpo", {"kl_coef": -0.1}, "kl_coef"),
        ("dapo", {"eps_high": -0.2}, "eps_high"),
        ("gspo", {"eps_low": 0.0}, "eps_low"),
        ("sapo", {"tau_neg": 0.0}, "tau_neg"),
        ("disco", {"delta": -1.0}, "delta"),
        ("disco", {"tau": float("nan")}, "tau"),
        ("dr_grpo", {"max_length": 0}, "max_length"),
    ],
)
def test_bad_values_name_the_field(name, hparams, field):
    with pytest.raises(ValueError, match=field):
        get_objective(name, **hparams)


def test_spec_strings_coerce_to_field_types():
    name, hparams = parse_objective_spec("conspo:credit=linear,margin=none,tau=5,margin_warmup=1")
    assert name == "conspo"
    assert hparams == {"credit_kind": "linear", "margin": "none", "tau": 5.0, "margin_warmup": 1.0}
    assert isinstance(hparams["tau"], float)
    objective = get_objective("conspo:credit=linear, score=clipped_ratio")
    assert (objective.credit_kind, objective.score_kind) == ("linear", "clipped_ratio")
    assert get_objective("dr_grpo:max_length=512").max_length == 512
    assert get_objective("dr_grpo:max_length=none").max_length is None
    assert get_objective("cispo:eps_low=0.5").eps_low == 0.5
    assert get_objective("conspo:tau=5", tau=2.0).tau == 2.0  # keywords override the spec
    with pytest.raises(ValueError, match=r"conspo.tau.*'abc'"):
        get_objective("conspo:tau=abc")
    with pytest.raises(ValueError, match="margin"):
        get_objective("conspo:margin=sometimes")
    with pytest.raises(ValueError, match="key=value"):
        get_objective("conspo:linear")


def test_register_refuses_duplicates_and_non_objectives():
    with pytest.raises(ValueError, match="already registered"):

        @register_objective("conspo")
        @dataclasses.dataclass
        class Again(ConSPO):
            pass

    with pytest.raises(TypeError):
        register_objective("not_an_objective")(dict)


def test_a_new_objective_registers_and_builds():
    from conspo.objectives import registry

    try:

        @register_objective("test_objectives_registry_dummy")
        @dataclasses.dataclass
        class Dummy(ConSPO):
            pass

        assert "test_objectives_registry_dummy" in list_objectives()
        assert isinstance(get_objective("test_objectives_registry_dummy", tau=3.0), Objective)
    finally:
        registry._REGISTRY.pop("test_objectives_registry_dummy", None)  # leave the registry as found


def test_kl_needs_reference_logps():
    objective = get_objective("grpo", kl_coef=0.1)
    assert objective.needs_ref_logps
    batch = RolloutBatch(torch.zeros(2, 3), torch.ones(2, 3), torch.tensor([0, 0]), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="ref_token_logps"):
        objective(batch)


# ---- RolloutBatch validation -------------------------------------------------------------------------------


def make(**overrides):
    fields = {
        "token_logps": torch.zeros(3, 4),
        "mask": torch.ones(3, 4),
        "group_ids": torch.tensor([0, 0, 1]),
        "rewards": torch.tensor([1.0, 0.0, 1.0]),
    }
    fields.update(overrides)
    return RolloutBatch(**fields)


@pytest.mark.parametrize(
    "overrides,error,pattern",
    [
        ({"token_logps": torch.zeros(3)}, ValueError, "token_logps must be"),
        ({"token_logps": torch.zeros(3, 4, dtype=torch.long)}, TypeError, "token_logps must be floating"),
        ({"mask": torch.ones(3, 5)}, ValueError, r"mask has shape \(3, 5\)"),
        ({"group_ids": torch.tensor([0, 1])}, ValueError, r"group_ids has shape \(2,\), expected \(3,\)"),
        ({"group_ids": torch.tensor([0.0, 1.0, 1.0])}, TypeError, "group_ids must be an integer"),
        ({"rewards": torch.ones(4)}, ValueError, "rewards has shape"),
        ({"labels": torch.tensor([1, 2, 0])}, ValueError, "row 1 has 2"),
        ({"labels": torch.tensor([1.0, 0.0, 0.0])}, TypeError, "labels must be an integer"),
        ({"old_token_logps": torch.zeros(2, 4)}, ValueError, "old_token_logps has shape"),
        ({"ref_token_logps": [[0.0]]}, TypeError, "ref_token_logps must be a torch.Tensor"),
    ],
)
def test_rollout_batch_rejects_malformed_input(overrides, error, pattern):
    with pytest.raises(error, match=pattern):
        make(**overrides)


def test_rollout_batch_defaults_and_selection():
    batch = make(group_ids=torch.tensor([4, 4, 9], dtype=torch.int32), rewards=torch.tensor([1, 0, 1]))
    assert batch.group_ids.dtype == torch.int64 and batch.rewards.dtype == torch.float32
    assert batch.labels.tolist() == [1, 0, 1]
    part = batch.select([2, 0])
    assert part.group_ids.tolist() == [9, 4] and part.token_logps.shape == (2, 4)
    assert batch.select(torch.tensor([True, False, True])).num_rows == 2
    assert batch.select(slice(1, 3)).labels.tolist() == [0, 1]


def test_credit_select_keeps_global_normalizer():
    batch = make()
    credit = get_objective("conspo").credit(batch)
    part = credit.select([0])
    assert part.coef.shape == (1,) and part.normalizer is credit.normalizer
    with pytest.raises(AttributeError, match="advantages"):
        _ = credit.advantages


@pytest.mark.slow  # a fresh interpreter importing torch: several seconds on a busy 2-core machine
def test_importing_objectives_pulls_in_no_ecosystem_package():
    code = (
        "import sys, conspo.objectives as o; o.get_objective('conspo'); "
        "print([m for m in ('transformers', 'trl', 'verl', 'math_verify', 'accelerate', 'datasets') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_check_whole_groups_names_the_partial_group():
    from conspo.objectives import check_whole_groups

    check_whole_groups(torch.tensor([3, 1, 3, 1]), 2)
    with pytest.raises(ValueError, match="group 7 has 1 rows in this batch, expected 2"):
        check_whole_groups(torch.tensor([3, 7, 3]), 2)


def test_peer_options_parse_from_the_spec_syntax():
    """normalize_over, delta, clip_ratio_c and DisCO's kl_estimator come through `name:key=value` specs, typed."""
    grpo = get_objective("grpo:delta=4,clip_ratio_c=3,normalize_over=all")
    assert (grpo.delta, grpo.clip_ratio_c, grpo.normalize_over) == (4.0, 3.0, "all")
    assert get_objective("dapo:delta=none").delta is None
    disco = get_objective("disco:kl_estimator=low_var_kl,normalize_over=valid")
    assert (disco.kl_estimator, disco.normalize_over) == ("k3", "valid")
    assert (get_objective("disco").kl_estimator, get_objective("disco").normalize_over) == ("k1", "all")
    assert get_objective("conspo").normalize_over == "valid"
    with pytest.raises(ValueError, match="normalize_over"):
        get_objective("conspo:normalize_over=rows")
