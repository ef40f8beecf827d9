"""The margin schedule m_t of ConSPO (Sec. 4.3, Eq. 13): a pure function of training progress."""

from __future__ import annotations

import math
from typing import Literal

__all__ = ["MarginKind", "margin_schedule"]

MarginKind = Literal["cosine", "fixed", "none"]


def margin_schedule(
    progress: float, kind: MarginKind = "cosine", target: float = 0.01, warmup: float = 0.3
) -> float:
    """The margin m_t at normalized progress lambda_t = step / total_steps.

    - "cosine" (the paper's curriculum): rho = min(lambda / alpha, 1), m = (M/2)(1 - cos(pi rho));
      m = 0 at the start, rises smoothly to M at lambda = alpha and stays there.
    - "fixed": m = M throughout (Table 6 ablation). "none": m = 0 (Table 6 ablation).

    `target` is M (nats per token, >= 0), `warmup` is alpha in (0, 1]. Progress outside [0, 1] is clamped
    (a trainer's last step may overshoot by one).
    """
    if not math.isfinite(progress):
        raise ValueError(f"margin_schedule: progress must be a finite number, got {progress}")
    if target < 0 or not math.isfinite(target):
        raise ValueError(f"margin_schedule: target margin M must be >= 0, got {target}")
    if not 0.0 < warmup <= 1.0:
        raise ValueError(f"margin_schedule: warmup alpha must be in (0, 1], got {warmup}")
    if kind == "none":
        return 0.0
    if kind == "fixed":
        return float(target)
    if kind != "cosine":
        raise ValueError(f"margin_schedule: kind must be 'cosine', 'fixed' or 'none', got {kind!r}")
    lam = min(max(float(progress), 0.0), 1.0)
    rho = min(lam / warmup, 1.0)
    return 0.5 * target * (1.0 - math.cos(math.pi * rho))
