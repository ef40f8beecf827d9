"""``<prefix>:...`` problem sets come from sources other packages register; the data layer imports none of them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conspo.data import DataError, load_problems, register_source
from conspo.data import registry as data_registry


def test_data_imports_the_testbed_only_when_a_testbed_set_is_loaded():
    code = (
        "import sys\n"
        "import conspo.data\n"
        "assert not any(m.startswith('conspo.testbed') for m in sys.modules), 'imported with conspo.data'\n"
        "problems = conspo.data.load_problems('testbed:add:1:5')\n"
        "assert len(problems) == 5 and 'conspo.testbed.problem_sets' in sys.modules\n"
        "assert 'testbed' in conspo.data.list_sources()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_registered_source_serves_its_prefix(monkeypatch):
    data_registry.get_source("testbed")  # registered before the copy, so it stays registered after the test
    monkeypatch.setattr(data_registry, "_SOURCES", dict(data_registry._SOURCES))
    calls = []

    def load(name, split):
        calls.append((name, split))
        return load_problems("testbed:add:1:3", split=split)

    register_source("mine", load, "a test source")
    assert len(load_problems("mine:anything", split="eval", limit=2)) == 2
    assert calls == [("mine:anything", "eval")]
    with pytest.raises(ValueError, match="already registered"):
        register_source("mine", lambda name, split: [])
    with pytest.raises(ValueError, match="without ':'"):
        register_source("a:b", load)
    with pytest.raises(DataError, match=r"not a source \(mine:\.\.\., testbed:\.\.\.\)"):
        load_problems("nothing-like-this")
