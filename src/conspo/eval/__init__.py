"""Benchmark evaluation as the paper reports it: avg@n, unbiased pass@k, maj@k (``conspo eval``).

```python
from conspo.eval import SampleCache, evaluate_problems
from conspo.rollout import HFGenerator, SamplingParams

result = evaluate_problems(
    HFGenerator(model, tokenizer), problems, verifier, n=32, ks=(1, 8),
    params=SamplingParams(temperature=0.6, top_p=0.95, max_new_tokens=8192),
    tokenizer=tokenizer, benchmark="aime24", cache=SampleCache("cache/model.jsonl", fingerprint),
)
result.metrics  # {"avg@32": ..., "pass@1": ..., "pass@8": ...}
```

Importing this package does not import torch; ``evaluate_problems`` does, through the rollout types.
"""

from __future__ import annotations

from conspo.eval.metrics import answer_groups, avg_at_n, maj_at_k, majority_answer, pass_at_k
from conspo.eval.presets import PRESETS, BenchmarkSpec, EvalPreset, get_preset

__all__ = [
    "PRESETS",
    "BenchmarkResult",
    "BenchmarkSpec",
    "EvalPreset",
    "ModelReport",
    "ProblemResult",
    "SampleCache",
    "SampleResult",
    "answer_groups",
    "avg_at_n",
    "evaluate_problems",
    "get_preset",
    "maj_at_k",
    "majority_answer",
    "model_fingerprint",
    "pass_at_k",
    "write_reports",
]

_LAZY = {
    "BenchmarkResult": "conspo.eval.runner",
    "ProblemResult": "conspo.eval.runner",
    "SampleResult": "conspo.eval.runner",
    "evaluate_problems": "conspo.eval.runner",
    "SampleCache": "conspo.eval.cache",
    "model_fingerprint": "conspo.eval.cache",
    "ModelReport": "conspo.eval.report",
    "write_reports": "conspo.eval.report",
}


def __getattr__(name: str):
    # The runner pulls in torch (via the rollout types); metric users should not pay for it.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'conspo.eval' has no attribute {name!r}")
