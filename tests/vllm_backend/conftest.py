"""The vLLM backend's tests run only in the vLLM environment (`make test-vllm`); elsewhere they are not collected.

The engine runs in the test process (VLLM_ENABLE_V1_MULTIPROCESSING=0, set before vLLM is imported), as in a run.
"""

from __future__ import annotations

import importlib.util
import os

if importlib.util.find_spec("vllm") is None:
    collect_ignore_glob = ["test_*.py"]
else:
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
