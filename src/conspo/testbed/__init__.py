"""The built-in CPU testbed: synthetic verifiable tasks, a character tokenizer and a tiny warm-started policy.

>>> from conspo.testbed import make_task
>>> make_task("add", seed=0).train_problems(1)[0].answer.isdigit()
True
"""

from __future__ import annotations

from conspo.testbed.model import TinyModelConfig, build_tiny_model
from conspo.testbed.tasks import TASKS, TestbedTask, make_task
from conspo.testbed.tokenizer import build_char_tokenizer
from conspo.testbed.warmstart import (
    WarmStartConfig,
    default_cache_dir,
    ensure_testbed_policy,
    load_testbed_policy,
    measure_accuracy,
    read_testbed_info,
    warm_start,
)

__all__ = [
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
