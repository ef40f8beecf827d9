"""avg@n, unbiased pass@k and maj@k as pure functions, checked against brute force."""

from __future__ import annotations

import itertools
import math

import pytest

from conspo.eval.metrics import answer_groups, avg_at_n, maj_at_k, majority_answer, pass_at_k


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    # Enumerate every k-subset of n samples (the first c correct) and count those with a correct one.
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_closed_form_and_edges():
    assert pass_at_k(32, 0, 8) == 0.0
    assert pass_at_k(32, 32, 1) == 1.0
    assert pass_at_k(32, 7, 1) == pytest.approx(7 / 32)  # pass@1 is the fraction correct
    assert pass_at_k(100, 3, 10) == pytest.approx(1 - math.comb(97, 10) / math.comb(100, 10))
    # Large n stays finite and inside [0, 1] (the binomials would overflow a float).
    value = pass_at_k(2000, 1, 1000)
    assert value == pytest.approx(0.5) and 0 <= value <= 1


@pytest.mark.parametrize(
    ("n", "c", "k", "match"),
    [(4, 0, 5, "k must be in"), (4, 5, 1, "0 <= c <= n"), (0, 0, 1, "n >= 1"), (4, 1, 0, "k must be in")],
)
def test_pass_at_k_rejects_bad_arguments(n, c, k, match):
    with pytest.raises(ValueError, match=match):
        pass_at_k(n, c, k)


def test_avg_at_n():
    assert avg_at_n([True, False, False, True]) == 0.5
    assert avg_at_n([False] * 3) == 0.0
    with pytest.raises(ValueError):
        avg_at_n([])


def fake_equivalent(pairs):
    """Equivalence by numeric value: '1/2', '0.5' and '\\frac{1}{2}' are the same answer."""
    values = {"1/2": 0.5, "0.5": 0.5, "\\frac{1}{2}": 0.5, "\\dfrac12": 0.5, "3": 3.0, "3.0": 3.0, "7": 7.0}
    return [values.get(a, a) == values.get(b, b) for a, b in pairs]


def test_maj_groups_equivalent_answers_written_differently():
    answers = ["3", "1/2", "0.5", "3.0", "\\frac{1}{2}", None, None, None]
    correct = [False, True, True, False, True, False, False, False]
    # Without equivalence every answer is its own group: a five-way tie, won by the first answer ("3").
    assert answer_groups(answers) == [[0], [1], [2], [3], [4]]
    assert majority_answer(answers) == [0]
    assert maj_at_k(answers, correct, k=8) == 0.0
    # With equivalence the 1/2 group (3 votes) beats the 3 group (2 votes); missing answers never vote.
    assert answer_groups(answers, fake_equivalent) == [[0, 3], [1, 2, 4]]
    assert maj_at_k(answers, correct, k=8, equivalent=fake_equivalent) == 1.0


def test_maj_whitespace_is_grouped_without_the_verifier():
    calls = []

    def counting(pairs):
        calls.append(pairs)
        return [False] * len(pairs)

    assert answer_groups(["x + 1", "x+1", " x +1."], counting) == [[0, 1, 2]]
    assert calls == []  # one distinct answer: no equivalence calls at all


def test_maj_tie_goes_to_answer_seen_first_and_uses_first_k():
    answers = ["7", "3", "3", "7", "1/2"]
    correct = [False, True, True, False, False]
    assert majority_answer(answers, fake_equivalent) == [0, 3]  # 2-2 tie: "7" appeared first
    assert maj_at_k(answers, correct, k=5, equivalent=fake_equivalent) == 0.0
    assert maj_at_k(answers, correct, k=3, equivalent=fake_equivalent) == 1.0  # first 3: "3" has 2 votes
    assert maj_at_k([None, None], [False, False], k=2) == 0.0
    with pytest.raises(ValueError, match="k must be in"):
        maj_at_k(answers, correct, k=6)
    with pytest.raises(ValueError, match="answers but"):
        maj_at_k(answers, correct[:2], k=1)


def test_answer_groups_merge_transitively():
    # a~b and b~c but the check never says a~c directly: one group all the same.
    links = {("a", "b"), ("b", "c")}
    groups = answer_groups(["c", "x", "a", "b"], lambda ps: [(p in links or p[::-1] in links) for p in ps])
    assert groups == [[0, 2, 3], [1]]
