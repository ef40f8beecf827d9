"""The README's objective example runs as written (documentation that stays true)."""

from __future__ import annotations

import re

from conftest import REPO_ROOT


def test_readme_objective_example_runs(capsys):
    text = (REPO_ROOT / "README.md").read_text()
    block = re.search(r"## The objective API.*?```python\n(.*?)```", text, re.S)
    assert block, "README lost its objective API example"
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    assert namespace["out"].loss.requires_grad
    assert namespace["batch"].token_logps.grad is not None
    assert "conspo" in capsys.readouterr().out
