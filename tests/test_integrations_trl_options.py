"""ConSPOConfig's ConSPO options are the objective's own fields: same defaults, help and types (no restating)."""

from __future__ import annotations

import dataclasses
import typing

import pytest

pytest.importorskip("trl")

from conspo.integrations.trl import CONSPO_OPTIONS, ConSPOConfig  # noqa: E402
from conspo.objectives import ConSPO, hyperparameter_field  # noqa: E402


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def test_conspo_config_options_carry_the_objective_default_help_and_type():
    ours, theirs = _fields(ConSPOConfig), _fields(ConSPO)
    our_hints, their_hints = typing.get_type_hints(ConSPOConfig), typing.get_type_hints(ConSPO)
    assert set(CONSPO_OPTIONS) <= set(ours)
    for name in CONSPO_OPTIONS:
        assert ours[name].default == theirs[name].default, name
        assert ours[name].metadata["help"] == theirs[name].metadata["help"], name
        assert our_hints[name] == their_hints[name], name


def test_every_conspo_option_reaches_the_objective(tmp_path):
    values = {"tau": 3.0, "margin": "fixed", "margin_max": 0.2, "margin_warmup": 0.5}
    assert set(values) == set(CONSPO_OPTIONS)
    objective = ConSPOConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", **values
    ).build_objective()
    assert {name: getattr(objective, name) for name in values} == values


def test_hyperparameter_field_copies_default_and_help_and_resolves_aliases():
    field = hyperparameter_field("conspo", "credit")  # alias of credit_kind
    assert field.default == "infonce"
    assert field.metadata["help"] == _fields(ConSPO)["credit_kind"].metadata["help"]
    with pytest.raises(ValueError, match="no hyperparameter 'temperature'"):
        hyperparameter_field(ConSPO, "temperature")
