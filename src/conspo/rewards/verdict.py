"""The verdict on one response: reward, whether it is correct, the extracted answer and why."""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum

__all__ = ["Reason", "Verdict"]


class Reason(str, Enum):
    """Why a verdict came out the way it did (a ``str`` enum: ``Reason.EXACT == "exact"``)."""

    EXACT = "exact"
    """The normalized strings are equal (or the same choice letter)."""
    NUMERIC = "numeric"
    """Both sides are numbers and equal (exact forms exactly; a decimal to its last written place and
    within ``rel_tol``)."""
    SYMBOLIC = "symbolic"
    """math-verify found the expressions / sets / intervals / tuples / equations equal."""
    CUSTOM = "custom"
    """A user verifier decided (see ``RewardConfig.custom_verifier``)."""
    NO_ANSWER = "no_answer"
    """No final answer could be extracted from the response."""
    NOT_EQUAL = "not_equal"
    """An answer was extracted and it differs from the gold answer."""
    TIMEOUT = "timeout"
    """The check ran past the hard wall-clock timeout; its worker was killed and replaced."""
    ERROR = "error"
    """The check raised or its worker died; the batch went on."""
    TOO_LONG = "too_long"
    """The extracted answer is longer than ``MAX_ANSWER_CHARS``: refused, not cut and not checked."""
    INVALID_GOLD = "invalid_gold"
    """The gold answer is missing, empty or not a string: the item cannot be scored."""

    def __str__(self) -> str:
        return self.value


CORRECT_REASONS = frozenset({Reason.EXACT, Reason.NUMERIC, Reason.SYMBOLIC, Reason.CUSTOM})


@dataclass(frozen=True)
class Verdict:
    """The verifier's decision on one (response, gold answer) pair.

    ``correct`` is the binary label ConSPO splits positives and negatives on; ``reward`` may be shaped
    (format reward, overlong penalty) and must not be used to derive labels. ``reason`` is a
    :class:`Reason` (compare with strings or enum members alike).
    """

    reward: float
    """The reward the trainer sees (1.0 / 0.0 unless shaping is on)."""
    correct: bool
    """True when the extracted answer equals the gold answer."""
    extracted: str | None
    """The final answer taken from the response, or None when none was found."""
    reason: str
    """One of :class:`Reason`."""

    def with_reward(self, reward: float) -> Verdict:
        """A copy with a different (shaped) reward; the label is unchanged."""
        return replace(self, reward=float(reward))

    @property
    def valid(self) -> bool:
        """False when the item cannot be scored (gold invalid): ConSPO's label -1."""
        return self.reason != Reason.INVALID_GOLD


def make_verdict(correct: bool, extracted: str | None, reason: Reason) -> Verdict:
    """The unshaped binary verdict: reward 1.0 when correct, else 0.0."""
    return Verdict(reward=1.0 if correct else 0.0, correct=bool(correct), extracted=extracted, reason=reason)
