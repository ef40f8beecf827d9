"""The phases of one RL step and the clock that times them flat (see conspo.trainer.step)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator

__all__ = ["PHASES", "PhaseTimer"]

PHASES = ("generate", "verify", "group", "credit", "update")
"""The phases of a step, in order; each is a ``time/<phase>`` key of the step's metrics."""


class PhaseTimer:
    """Wall-clock seconds per named phase of one step; phases are flat, and together they are the step.

    A phase is charged from the end of the previous phase (or the timer's start) to its own end, so the small
    bookkeeping between two phases belongs to the next one and ``sum(seconds.values()) == total``. Opening a
    phase inside another raises (a nested phase would be counted twice).
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._start = self._mark = time.perf_counter()
        self._open: str | None = None

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self._open is not None:
            raise RuntimeError(f"phase {name!r} opened inside phase {self._open!r}: phases are flat")
        self._open = name
        try:
            yield
        finally:
            now = time.perf_counter()
            self.seconds[name] += now - self._mark
            self._mark = now
            self._open = None

    @property
    def total(self) -> float:
        """Seconds from the timer's start to the end of the last phase (the sum of the phases)."""
        return self._mark - self._start
