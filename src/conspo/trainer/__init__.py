"""The RLVR trainer behind ``conspo train``: generate -> verify -> group -> credit -> update.

```python
from conspo.config import load_config
from conspo.trainer import TrainConfig, train

cfg = load_config(TrainConfig, "run.yaml", ["objective.name=grpo", "batch.group_size=8"])
result = train(cfg)   # TrainResult: run_dir, eval_before, eval_after, best_eval, final_dir, history
```

Importing this package is cheap: the loop (torch, transformers) loads on first use of ``train``/``Trainer``.
See docs/trainer.md for the step, every metric and every config field.
"""

from __future__ import annotations

from typing import Any

from conspo.trainer.config import TrainConfig

__all__ = ["TrainConfig", "TrainResult", "Trainer", "train"]


def __getattr__(name: str) -> Any:
    if name in ("TrainResult", "Trainer", "train"):
        from conspo.trainer import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'conspo.trainer' has no attribute {name!r}")
