"""verl's ``algorithm.conspo`` options are ConSPO's own fields: same defaults, help and types, all applied."""

from __future__ import annotations

import dataclasses
import typing

import pytest

verl = pytest.importorskip("verl")
pytestmark = pytest.mark.verl

from conspo.integrations import verl as plugin  # noqa: E402
from conspo.objectives import ConSPO  # noqa: E402


def test_options_carry_the_objective_default_help_and_type():
    ours = {f.name: f for f in dataclasses.fields(plugin.VerlConSPOOptions)}
    theirs = {f.name: f for f in dataclasses.fields(ConSPO)}
    our_hints, their_hints = typing.get_type_hints(plugin.VerlConSPOOptions), typing.get_type_hints(ConSPO)
    for name in plugin.CONSPO_OPTIONS:
        target = ConSPO.aliases.get(name, name)
        assert ours[name].default == theirs[target].default, name
        assert ours[name].metadata["help"] == theirs[target].metadata["help"], name
        assert our_hints[name] == their_hints[target], name


def test_every_option_reaches_the_objective():
    values = {"tau": 3.0, "margin": "fixed", "margin_max": 0.2, "margin_warmup": 0.5, "credit": "linear"}
    assert set(values) == set(plugin.CONSPO_OPTIONS)
    objective = plugin.VerlConSPOOptions.from_config({"conspo": values}).build_objective()
    got = {name: getattr(objective, ConSPO.aliases.get(name, name)) for name in values}
    assert got == values
