"""The testbed's problem sets in `conspo.data`: ``load_problems("testbed:<task>[:<difficulty>[:<count>]]")``.

Importing this module registers the ``testbed`` source with the data registry (`conspo.data.register_source`);
`conspo.data` names this module as the provider of ``testbed:`` names and imports it on first use, so the
data layer holds none of the testbed's code.
"""

from __future__ import annotations

from conspo.data.loading import DataError
from conspo.data.problem import Problem
from conspo.data.registry import register_source
from conspo.testbed.tasks import make_task

__all__ = ["load_testbed_set"]


def load_testbed_set(name: str, split: str | None) -> list[Problem]:
    """``testbed:<task>[:<difficulty>[:<count>]]``; e.g. ``testbed:add:3:500``: 500 problems of 3-digit addition.

    ``split`` None or ``train``: the task's training problems (1000 by default); ``eval`` / ``test`` /
    ``validation``: its held-out problems (200 by default), disjoint from the training ones for every seed.
    """
    parts = name.split(":")[1:]
    try:
        task = make_task(parts[0], difficulty=int(parts[1]) if len(parts) > 1 and parts[1] else None)
        count = int(parts[2]) if len(parts) > 2 else (1000 if split in (None, "train") else 200)
    except (IndexError, ValueError) as exc:
        raise DataError(
            f"bad testbed set {name!r} (use testbed:<task>[:<difficulty>[:<count>]]): {exc}"
        ) from None
    if split in (None, "train"):
        return task.train_problems(count)
    if split in ("eval", "test", "validation"):
        return task.eval_problems(count)
    raise DataError(f"testbed sets have splits train and eval (or test), not {split!r}")


register_source(
    "testbed", load_testbed_set, "testbed:<task>[:<difficulty>[:<count>]] (the CPU testbed's tasks)"
)
