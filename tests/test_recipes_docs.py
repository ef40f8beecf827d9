"""docs/configuration.md is generated from the config dataclasses; the docs link to each other."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_configuration_reference_is_up_to_date():
    spec = importlib.util.spec_from_file_location("gen_config_docs", ROOT / "scripts" / "gen_config_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    expected = module.render()
    actual = (ROOT / "docs" / "configuration.md").read_text()
    assert actual == expected, (
        "docs/configuration.md is stale: python scripts/gen_config_docs.py > docs/configuration.md"
    )
    from conspo.config import config_fields
    from conspo.trainer.config import TrainConfig

    for key, *_ in config_fields(TrainConfig):
        assert f"`{key}`" in actual


def test_relative_links_in_my_docs_resolve():
    for name in ("index.md", "guide.md", "method.md"):
        page = ROOT / "docs" / name
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{name} links to missing {target}"
