"""The built-in CPU testbed: synthetic verifiable tasks, a character tokenizer and a tiny warm-started policy.

``make_task`` and the tasks need no torch; the tokenizer, the model and the warm start load on first use.

>>> from conspo.testbed import make_task
>>> make_task("add", seed=0).train_problems(1)[0].answer.isdigit()
True
"""

from __future__ import annotations

import importlib
from typing import Any

from conspo.testbed.tasks import TASKS, TestbedTask, make_task

__all__ = [
    "DEFAULT_TESTBED",
    "TASKS",
    "TestbedTask",
    "TinyModelConfig",
    "WarmStartConfig",
    "build_char_tokenizer",
    "build_tiny_model",
    "default_cache_dir",
    "ensure_testbed_policy",
    "load_testbed_policy",
    "make_task",
    "measure_accuracy",
    "read_testbed_info",
    "warm_start",
]

_LAZY = {
    "TinyModelConfig": "conspo.testbed.config",
    "build_tiny_model": "conspo.testbed.model",
    "build_char_tokenizer": "conspo.testbed.tokenizer",
    "DEFAULT_TESTBED": "conspo.testbed.config",
    "WarmStartConfig": "conspo.testbed.config",
    "default_cache_dir": "conspo.testbed.warmstart",
    "ensure_testbed_policy": "conspo.testbed.warmstart",
    "load_testbed_policy": "conspo.testbed.warmstart",
    "measure_accuracy": "conspo.testbed.warmstart",
    "read_testbed_info": "conspo.testbed.warmstart",
    "warm_start": "conspo.testbed.warmstart",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'conspo.testbed' has no attribute {name!r}")
