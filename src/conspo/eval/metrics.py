"""The paper's evaluation metrics as pure functions: avg@n, unbiased pass@k, maj@k.

All three are computed per problem and then averaged over a benchmark's problems (the usual protocol,
e.g. Chen et al. 2021 for pass@k; the paper reports avg@32 on AIME/HMMT/AMC and pass@1 on MATH-500
and OlympiadBench).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

__all__ = ["answer_groups", "avg_at_n", "majority_answer", "maj_at_k", "mean", "pass_at_k"]

# equivalent(pairs) -> one bool per (a, b) pair; e.g. a verifier's `equivalent_pairs`.
Equivalence = Callable[[list[tuple[str, str]]], list[bool]]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from ``n`` samples of which ``c`` are correct: ``1 - C(n-c, k) / C(n, k)``.

    The probability that at least one of ``k`` samples drawn without replacement from the ``n`` is
    correct (Chen et al. 2021, Eq. 1). Computed in the numerically stable product form
    ``1 - prod_{i=n-c+1}^{n} (1 - k / i)``, which never forms the binomials.
    """
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"pass_at_k: {name} must be an int, got {value!r}")
    if n < 1 or not 0 <= c <= n:
        raise ValueError(f"pass_at_k: need n >= 1 and 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k must be in [1, n={n}], got k={k}")
    if n - c < k:  # every k-subset contains a correct sample
        return 1.0
    product = 1.0
    for i in range(n - c + 1, n + 1):
        product *= 1.0 - k / i
    return 1.0 - product


def avg_at_n(correct: Sequence[bool]) -> float:
    """avg@n of one problem: the fraction of its ``n`` samples that are correct (= unbiased pass@1)."""
    if len(correct) == 0:
        raise ValueError("avg_at_n: no samples")
    return sum(bool(x) for x in correct) / len(correct)


def _normalize(answer: str) -> str:
    # Cheap exact-match key before the (costly) equivalence check: spacing and a final period never matter.
    return "".join(answer.split()).rstrip(".")


def answer_groups(answers: Sequence[str | None], equivalent: Equivalence | None = None) -> list[list[int]]:
    """Group sample indices whose extracted answers are equivalent; ``None`` (no answer) joins no group.

    Answers equal after removing whitespace are grouped directly; the distinct ones are then compared
    pairwise with ``equivalent`` (one batched call) and merged transitively. Groups come out in order of
    their first member, members in sample order.
    """
    keys: dict[str, int] = {}
    members: list[list[int]] = []
    representatives: list[str] = []
    for index, answer in enumerate(answers):
        if answer is None:
            continue
        key = _normalize(answer)
        if key not in keys:
            keys[key] = len(members)
            members.append([])
            representatives.append(answer)
        members[keys[key]].append(index)
    if equivalent is None or len(members) < 2:
        return members
    pairs = [(a, b) for a in range(len(members)) for b in range(a + 1, len(members))]
    verdicts = equivalent([(representatives[a], representatives[b]) for a, b in pairs])
    if len(verdicts) != len(pairs):
        raise ValueError(
            f"answer_groups: equivalent() returned {len(verdicts)} verdicts for {len(pairs)} pairs"
        )
    parent = list(range(len(members)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for (a, b), same in zip(pairs, verdicts):
        if same:
            ra, rb = root(a), root(b)
            parent[max(ra, rb)] = min(ra, rb)  # the earlier group absorbs the later one
    merged: dict[int, list[int]] = {}
    for g, indices in enumerate(members):
        merged.setdefault(root(g), []).extend(indices)
    return [sorted(indices) for _, indices in sorted(merged.items())]


def majority_answer(answers: Sequence[str | None], equivalent: Equivalence | None = None) -> list[int] | None:
    """The largest answer group's sample indices, or None when no sample has an answer.

    Ties go to the group whose first member came first (deterministic, independent of answer text).
    """
    groups = answer_groups(answers, equivalent)
    if not groups:
        return None
    return max(groups, key=lambda g: (len(g), -g[0]))


def maj_at_k(
    answers: Sequence[str | None], correct: Sequence[bool], k: int, equivalent: Equivalence | None = None
) -> float:
    """maj@k of one problem: 1.0 if the majority answer among the FIRST ``k`` samples is correct, else 0.0.

    Answers are grouped by equivalence (:func:`answer_groups`); samples without an extracted answer do
    not vote; a tie goes to the answer seen first. The group's correctness is its first member's verdict
    (members are equivalent, so their verdicts agree). With ``k < n`` this is one draw (the first k),
    not an average over subsets.
    """
    if len(answers) != len(correct):
        raise ValueError(f"maj_at_k: {len(answers)} answers but {len(correct)} verdicts")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(answers):
        raise ValueError(f"maj_at_k: k must be in [1, n={len(answers)}], got {k!r}")
    winner = majority_answer(list(answers[:k]), equivalent)
    return float(winner is not None and bool(correct[winner[0]]))


def mean(values: Sequence[float]) -> float:
    """Plain mean; a benchmark's score is the mean of its per-problem scores."""
    if len(values) == 0:
        raise ValueError("mean: no values")
    return sum(values) / len(values)
