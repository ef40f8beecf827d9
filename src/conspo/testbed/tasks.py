"""Synthetic verifiable tasks for the CPU testbed: addition, multiplication, a short chain of steps and a
variable-length chain whose slips change the length of the reasoning.

Each task is a deterministic function of ``(name, difficulty, seed)``. Train and eval splits are disjoint by
construction: a problem's split is a hash of its text (independent of the seed), so the eval problems of any
seed never appear in the training problems of any seed.

A task also provides the *teacher* completions used by the warm start (``teacher_completion``): short
reasoning where the task needs it, then ``\\boxed{<answer>}``. The teacher can be told to make a typical slip
(a dropped or spurious carry, an off-by-one step), which is how the warm start produces a base policy with
partial accuracy whose correct answers are within reach of sampling (see ``warmstart.py``).

What each task is for (``docs/data.md``): ``add`` / ``mul`` / ``chain`` are the quick demo tasks (fixed-length
completions, base accuracy about one half); ``varchain`` is built to let objectives differ: 2 to
``difficulty`` steps per problem (so completion length varies with the problem), slips that drop or repeat a
step (wrong completions one step shorter or longer than right ones) or put one step off by one (a near miss
that differs from the right completion in a few digits only), and a base accuracy of 20-40% (the longer
chains are harder for the tiny policy to learn).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

from conspo.data.problem import Problem

__all__ = ["TASKS", "TestbedTask", "make_task"]

TASKS: dict[str, str] = {
    "add": "a + b, each operand with `difficulty` digits (default 2), worked column by column",
    "mul": "a * b, a with `difficulty` digits, b with one digit (default 2), worked column by column",
    "chain": "a running sum of `difficulty` + 1 one-digit terms (default 2 steps), totals written as they go",
    "varchain": "a running sum of 2 to `difficulty` one-digit steps (default 5); slips skip, repeat or miss a step",
}
DEFAULT_DIFFICULTY = {"add": 2, "mul": 2, "chain": 2, "varchain": 5}
VARCHAIN_SLIPS = ("off", "skip", "repeat")  # one wrong step: off by one, left out, or applied twice
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
        # chain: first term, then d signed one-digit steps; the running total never goes negative.
        # varchain: the same with a number of steps drawn from 2..d (1 at difficulty 1).
        steps = rng.randint(min(2, d), d) if self.name == "varchain" else d
        terms = [rng.randint(1, 9)]
        total = terms[0]
        for _ in range(steps):
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

    def _problems(self, n: int, split: str, at_most: bool = False) -> list[Problem]:
        if n < 0:
            raise ValueError(f"number of problems must be >= 0, got {n}")
        # Separate streams per split so that asking for more train problems never changes the eval ones.
        rng = random.Random(f"{self.name}|{self.difficulty}|{self.seed}|{split}")
        seen: set[str] = set()
        texts: list[str] = []
        misses = 0
        while len(texts) < n:
            text = self._text(self._operands(rng))
            if text in seen or self._is_eval(text) != (split == "eval"):
                misses += 1
                if misses > 5000:  # the split's problem space is (nearly) exhausted
                    break
                continue
            misses = 0
            seen.add(text)
            texts.append(text)
        if len(texts) < n and not (at_most and texts):  # at_most: as many distinct ones as the split has
            if split == "eval" or not texts:
                raise ValueError(
                    f"testbed task {self.name!r} (difficulty {self.difficulty}) has only {len(texts)} distinct "
                    f"{split} problems, fewer than the {n} asked for; ask for fewer or raise the difficulty"
                )
            # Training may revisit problems (epochs): cycle through the distinct ones in their seeded order.
            texts = [texts[i % len(texts)] for i in range(n)]
        return [
            Problem(
                id=f"testbed/{self.name}{self.difficulty}/{split}/{i}",
                problem=text,
                answer=str(self.solve(text)),
                source=f"testbed-{self.name}",
                meta={"task": self.name, "difficulty": self.difficulty, "split": split},
            )
            for i, text in enumerate(texts)
        ]

    def train_problems(self, n: int) -> list[Problem]:
        """``n`` training problems (deterministic in the seed; disjoint from every eval split).

        Distinct while the task has enough; past that (small spaces such as ``mul`` at difficulty 1) the
        distinct problems repeat in order, as further epochs would.
        """
        return self._problems(n, "train")

    def eval_problems(self, n: int, *, at_most: bool = False) -> list[Problem]:
        """``n`` distinct held-out problems (deterministic in the seed; disjoint from every train split).

        Raises ``ValueError`` when the task has fewer than ``n`` distinct held-out problems, unless ``at_most``:
        then it returns all of them.
        """
        return self._problems(n, "eval", at_most)

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

        ``add`` / ``mul``: the column results from the ones digit up, carries included (``8,10 \\boxed{108}``
        for ``63+45``; ``56,29 \\boxed{296}`` for ``37*8``); a slip drops a carry, or adds one where there is
        none, and the rest follows from it. ``chain``: the running totals, then ``\\boxed{N}``; a slip is one
        step off by one, carried through the rest of the chain. ``varchain``: the running totals, one per step;
        a slip (kind drawn from ``VARCHAIN_SLIPS``) puts one step off by one (same length), skips one step (one
        total fewer) or applies one step twice (one total more), carried through the rest.
        """
        rng = rng or random.Random(text)
        ops = self._parse(text)
        if self.name == "varchain":
            return self._varchain_completion(ops, slip, rng)
        if self.name == "chain":
            wrong_at = rng.randrange(1, len(ops)) if slip else -1
            totals, total = [], ops[0]
            for i, t in enumerate(ops[1:], start=1):
                total += t + (rng.choice((-1, 1)) if i == wrong_at else 0)
                totals.append(total)
            return ",".join(map(str, totals)) + f" \\boxed{{{total}}}"
        a, b = ops
        a_digits = [int(c) for c in reversed(str(a))]
        width = len(a_digits) if self.name == "mul" else max(len(a_digits), len(str(b)))
        a_digits += [0] * (width - len(a_digits))
        b_digits = [int(c) for c in reversed(str(b))] + [0] * width
        slip_at = (rng.randrange(1, width) if width > 1 else 0) if slip else -1
        steps, digits, carry = [], [], 0
        for i in range(width):
            if i == slip_at:
                carry = 0 if carry else 1  # the typical slip: a carry forgotten, or one invented
            total = (a_digits[i] + b_digits[i] if self.name == "add" else a_digits[i] * b) + carry
            steps.append(str(total))
            digits.append(total % 10)
            carry = total // 10
        answer = int(str(total) + "".join(str(d) for d in reversed(digits[:-1])))
        return ",".join(steps) + f" \\boxed{{{answer}}}"

    @staticmethod
    def _varchain_completion(ops: tuple[int, ...], slip: bool, rng: random.Random) -> str:
        steps = list(ops[1:])
        kind, at = None, -1
        if slip:
            kind, at = rng.choice(VARCHAIN_SLIPS), rng.randrange(len(steps))
        totals, total = [], ops[0]
        for i, t in enumerate(steps):
            if i == at and kind == "skip":
                continue
            total += t + (rng.choice((-1, 1)) if i == at and kind == "off" else 0)
            totals.append(total)
            if i == at and kind == "repeat":
                total += t
                totals.append(total)
        body = ",".join(map(str, totals)) if totals else str(ops[0])  # one step skipped: the start stands
        return body + f" \\boxed{{{total}}}"


def make_task(name: str, *, seed: int = 0, difficulty: int | None = None) -> TestbedTask:
    """Build a testbed task by name (``add``, ``mul``, ``chain``, ``varchain``); ``difficulty`` defaults per task."""
    if name not in TASKS:
        raise ValueError(f"unknown testbed task {name!r}; choose one of {sorted(TASKS)}")
    difficulty = DEFAULT_DIFFICULTY[name] if difficulty is None else int(difficulty)
    if not 1 <= difficulty <= 8:
        raise ValueError(f"testbed difficulty must be between 1 and 8, got {difficulty} for task {name!r}")
    return TestbedTask(name=name, difficulty=difficulty, seed=int(seed))
