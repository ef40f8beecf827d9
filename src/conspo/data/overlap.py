"""Train/eval contamination check on normalized problem text."""

from __future__ import annotations

import re
import unicodedata
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

from conspo.data.problem import Problem

__all__ = ["Overlap", "check_overlap", "normalize_problem_text"]

_SPACE = re.compile(r"\s+")


def normalize_problem_text(text: str) -> str:
    """Unicode NFKC, lower case, whitespace collapsed and trimmed: equal texts after this count as the same."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()


@dataclass(frozen=True)
class Overlap:
    """An evaluation problem whose normalized text is also in the training set."""

    eval_id: str
    train_id: str
    text: str


def check_overlap(train: Iterable[Problem], eval: Iterable[Problem], *, warn: bool = True) -> list[Overlap]:
    """Evaluation problems that also appear in the training problems; warns with the count when any do."""
    seen: dict[str, str] = {}
    for p in train:
        seen.setdefault(normalize_problem_text(p.problem), p.id)
    found = []
    for p in eval:
        key = normalize_problem_text(p.problem)
        if key in seen:
            found.append(Overlap(eval_id=p.id, train_id=seen[key], text=key))
    if found and warn:
        examples = ", ".join(f"{o.eval_id} = {o.train_id}" for o in found[:3])
        warnings.warn(
            f"{len(found)} evaluation problem(s) also appear in the training set ({examples}"
            f"{', ...' if len(found) > 3 else ''}); drop them from one side for a clean evaluation",
            stacklevel=2,
        )
    return found
