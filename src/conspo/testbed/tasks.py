"""Synthetic verifiable tasks for the CPU testbed: addition, multiplication and a short chain of steps.

Each task is a deterministic function of ``(name, difficulty, seed)``. Train and eval splits are disjoint by
construction: a problem's split is a hash of its text (independent of the seed), so the eval problems of any
seed never appear in the training problems of any seed.

A task also provides the *teacher* completions used by the warm start (``teacher_completion``): short
reasoning where the task needs it, then ``\\boxed{<answer>}``. The teacher can be told to make a typical slip
(a dropped or spurious carry, an off-by-one step), which is how the warm start produces a base policy with
partial accuracy whose correct answers are within reach of sampling (see ``warmstart.py``).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from conspo.data.problem import Problem

__all__ = ["TASKS", "TestbedTask", "make_task"]

TASKS: dict[str, str] = {
    "add": "a + b, each operand with `difficulty` digits (default 2); answer in one step",
    "mul": "a * b, a with `difficulty` digits, b with one digit (default 2)",
    "chain": "a running sum of `difficulty` + 1 one-digit terms (default 3 steps), totals written as they go",
}
DEFAULT_DIFFICULTY = {"add": 2, "mul": 2, "chain": 3}
EVAL_FRACTION = 0.2  # share of the problem space reserved for evaluation (by hash of the text)


@dataclass(frozen=True)
class TestbedTask:
    """A synthetic task: ``train_problems(n)`` / ``eval_problems(n)`` give ``Problem``s with integer answers."""

    __test__ = False  # not a pytest test class despite the name

    name: str
    difficulty: int
    seed: int = 0

    # -- problem generation -------------------------------------------------------------------------
    def _operands(self, rng: random.Random) -> tuple[int, ...]:
        d = self.difficulty
        if self.name == "add":
            lo, hi = (0 if d == 1 else 10 ** (d - 1)), 10**d - 1
            return rng.randint(lo, hi), rng.randint(lo, hi)
        if self.name == "mul":
            lo, hi = (0 if d == 1 else 10 ** (d - 1)), 10**d - 1
            return rng.randint(lo, hi), rng.randint(2, 9)
        # chain: first term, then d signed one-digit steps; the running total never goes negative
        terms = [rng.randint(1, 9)]
        total = terms[0]
        for _ in range(d):
            step = rng.randint(1, 9) * (-1 if rng.random() < 0.4 else 1)
            if total + step < 0:
                step = -step
            terms.append(step)
            total += step
        return tuple(terms)

    def _text(self, operands: tuple[int, ...]) -> str:
        if self.name == "add":
            return f"{operands[0]}+{operands[1]}"
        if self.name == "mul":
            return f"{operands[0]}*{operands[1]}"
        return str(operands[0]) + "".join(f"{t:+d}" for t in operands[1:])

    def _is_eval(self, text: str) -> bool:
        digest = hashlib.sha256(f"{self.name}|{self.difficulty}|{text}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < EVAL_FRACTION

    def _problems(self, n: int, split: str) -> list[Problem]:
        if n < 0:
            raise ValueError(f"number of problems must be >= 0, got {n}")
        # Separate streams per split so that asking for more train problems never changes the eval ones.
        rng = random.Random(f"{self.name}|{self.difficulty}|{self.seed}|{split}")
        seen: set[str] = set()
        out: list[Problem] = []
        attempts = 0
        while len(out) < n:
            attempts += 1
            if attempts > 50 * n + 1000:
                raise ValueError(
                    f"testbed task {self.name!r} (difficulty {self.difficulty}) has fewer than {n} distinct "
                    f"{split} problems (found {len(out)}); ask for fewer or raise the difficulty"
                )
            operands = self._operands(rng)
            text = self._text(operands)
            if text in seen or self._is_eval(text) != (split == "eval"):
                continue
            seen.add(text)
            out.append(
                Problem(
                    id=f"testbed/{self.name}{self.difficulty}/{split}/{len(out)}",
                    problem=text,
                    answer=str(self.solve(text)),
                    source=f"testbed-{self.name}",
                    meta={"task": self.name, "difficulty": self.difficulty, "split": split},
                )
            )
        return out

    def train_problems(self, n: int) -> list[Problem]:
        """``n`` distinct training problems (deterministic in the seed; disjoint from every eval split)."""
        return self._problems(n, "train")

    def eval_problems(self, n: int) -> list[Problem]:
        """``n`` distinct held-out problems (deterministic in the seed; disjoint from every train split)."""
        return self._problems(n, "eval")

    # -- answers and teacher completions --------------------------------------------------------------
    def _parse(self, text: str) -> tuple[int, ...]:
        if self.name == "add":
            a, b = text.split("+")
            return int(a), int(b)
        if self.name == "mul":
            a, b = text.split("*")
            return int(a), int(b)
        terms, cur = [], ""
        for ch in text:
            if ch in "+-" and cur:
                terms.append(int(cur))
                cur = ""
            cur += ch
        terms.append(int(cur))
        return tuple(terms)

    def solve(self, text: str) -> int:
        """The exact answer of a problem of this task."""
        ops = self._parse(text)
        if self.name == "mul":
            return ops[0] * ops[1]
        return sum(ops)

    def teacher_completion(self, text: str, *, slip: bool = False, rng: random.Random | None = None) -> str:
        """The completion the warm start imitates; with ``slip`` it contains one typical mistake.

        ``add`` / ``mul``: ``\\boxed{N}``; a slip is a dropped or spurious carry (the answer off by
        ``10**k``). ``chain``: the running totals, then ``\\boxed{N}``; a slip is one step off by one,
        carried through the rest of the chain.
        """
        rng = rng or random.Random(text)
        if self.name in ("add", "mul"):
            answer = self.solve(text)
            if slip:
                k = rng.randrange(max(1, len(str(answer)) - 1))
                delta = 10 ** (k + 1)
                answer = answer - delta if answer - delta >= 0 and rng.random() < 0.5 else answer + delta
            return f"\\boxed{{{answer}}}"
        terms = self._parse(text)
        wrong_at = rng.randrange(1, len(terms)) if slip else -1
        totals, total = [], terms[0]
        for i, t in enumerate(terms[1:], start=1):
            total += t + (rng.choice((-1, 1)) if i == wrong_at else 0)
            totals.append(total)
        return ",".join(map(str, totals)) + f" \\boxed{{{total}}}"


def make_task(name: str, *, seed: int = 0, difficulty: int | None = None) -> TestbedTask:
    """Build a testbed task by name (``add``, ``mul``, ``chain``); ``difficulty`` defaults per task."""
    if name not in TASKS:
        raise ValueError(f"unknown testbed task {name!r}; choose one of {sorted(TASKS)}")
    difficulty = DEFAULT_DIFFICULTY[name] if difficulty is None else int(difficulty)
    if not 1 <= difficulty <= 8:
        raise ValueError(f"testbed difficulty must be between 1 and 8, got {difficulty} for task {name!r}")
    return TestbedTask(name=name, difficulty=difficulty, seed=int(seed))
