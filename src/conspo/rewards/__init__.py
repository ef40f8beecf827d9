"""Verifiable math reward: answer extraction, equivalence, and a process-isolated verifier pool.

No torch here, and math-verify loads only inside the verifier's worker processes (or on the first
in-process symbolic check).

>>> from conspo.rewards import MathVerifier
>>> with MathVerifier(num_workers=2, timeout=5.0) as verifier:  # doctest: +SKIP
...     verdicts = verifier.verify_batch(completions, answers)
"""

from __future__ import annotations

from conspo.rewards.equivalence import (
    DEFAULT_REL_TOL,
    check_equivalence,
    fast_equivalence,
    normalize_answer,
    parse_number,
    symbolic_equivalence,
)
from conspo.rewards.extraction import extract_answer, extract_boxed
from conspo.rewards.reward_fn import RewardConfig, RewardFunction, build_reward_fn, overlong_penalty
from conspo.rewards.verdict import Reason, Verdict
from conspo.rewards.verifier import MathVerifier, VerifierStats

__all__ = [
    "DEFAULT_REL_TOL",
    "MathVerifier",
    "Reason",
    "RewardConfig",
    "RewardFunction",
    "Verdict",
    "VerifierStats",
    "build_reward_fn",
    "check_equivalence",
    "extract_answer",
    "extract_boxed",
    "fast_equivalence",
    "normalize_answer",
    "overlong_penalty",
    "parse_number",
    "symbolic_equivalence",
]
