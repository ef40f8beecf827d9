"""The unit every layer passes around: one verifiable problem with its ground-truth answer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Problem"]


@dataclass(frozen=True)
class Problem:
    """One problem with a verifiable final answer.

    ``answer`` is the ground truth as a string (LaTeX allowed, never wrapped in ``\\boxed{}``); the verifier
    compares a completion's last ``\\boxed{}`` against it. ``meta`` holds every other column of the source
    row (``solution``, ``level``, ``subject``, ...), untouched.
    """

    id: str
    problem: str
    answer: str
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
