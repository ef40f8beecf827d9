"""Reading the objectives and seeds of ``conspo compare`` from the command line.

An objective spec is ``name`` or ``name:key=value,key=value`` (``conspo.objectives.parse_objective_spec``).
Lists of specs may be written three ways, all unambiguous:

- separated by spaces or ``;``: ``--objectives grpo "conspo:credit=linear,margin=none"``;
- repeated ``--objective SPEC`` (each taken whole, never split);
- the issue's comma form ``grpo,conspo,conspo:credit=linear,margin=none``: a comma-separated segment that
  contains ``=`` but no ``:`` is a ``key=value`` of the objective before it, any other segment starts a new
  objective. (No objective name contains ``=``, so this reading is the only one.)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

__all__ = ["ABLATIONS", "parse_objective_list", "parse_seeds", "slug"]

ABLATIONS: tuple[str, ...] = (
    "conspo",
    "conspo:credit=linear",
    "conspo:score=clipped_ratio",
    "conspo:margin=none",
    "conspo:margin=fixed",
)
"""Table 6 of the paper: full ConSPO, linear score difference, clipped IS-ratio scores, no margin, fixed margin."""


def _split_commas(text: str) -> list[str]:
    specs: list[str] = []
    for segment in (s.strip() for s in text.split(",")):
        if not segment:
            continue
        if "=" in segment and ":" not in segment:
            if not specs:
                raise ValueError(
                    f"objective list {text!r}: {segment!r} is a key=value with no objective before it"
                )
            head = specs[-1]
            specs[-1] = f"{head},{segment}" if ":" in head else f"{head}:{segment}"
        else:
            specs.append(segment)
    return specs


def parse_objective_list(items: Iterable[str], whole: Sequence[str] = ()) -> list[str]:
    """Objective specs from ``--objectives`` items (split as described above) and ``--objective`` specs.

    Every spec is checked against the registry (unknown names and hyperparameters raise ValueError naming
    them); a spec given twice raises ValueError.
    """
    from conspo.objectives import get_objective

    specs: list[str] = []
    for item in items:
        for part in re.split(r"[;\s]+", item.strip()):
            specs.extend(_split_commas(part))
    specs.extend(s.strip() for s in whole if s.strip())
    if not specs:
        raise ValueError("no objective given; e.g. --objectives grpo,conspo or --ablations")
    seen: set[str] = set()
    for spec in specs:
        if spec in seen:
            raise ValueError(f"objective {spec!r} is listed twice")
        seen.add(spec)
        try:
            get_objective(spec)
        except (TypeError, ValueError) as e:
            raise ValueError(f"objective {spec!r}: {e}") from e
    return specs


def parse_seeds(text: str | int) -> list[int]:
    """``"5"`` -> seeds 0..4; ``"0,3,7"`` -> those seeds; ``"2-4"`` -> 2, 3, 4."""
    raw = str(text).strip()
    try:
        if "," in raw:
            seeds = [int(s) for s in raw.split(",") if s.strip()]
        elif re.fullmatch(r"\d+-\d+", raw):
            lo, hi = (int(s) for s in raw.split("-"))
            seeds = list(range(lo, hi + 1))
        else:
            n = int(raw)
            if n < 1:
                raise ValueError
            seeds = list(range(n))
    except ValueError:
        raise ValueError(
            f"--seeds: expected a count (5), a list (0,3,7) or a range (2-4); got {raw!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ValueError(f"--seeds: need distinct non-negative seeds; got {raw!r}")
    return seeds


def slug(spec: str) -> str:
    """A file-name-safe form of an objective spec: ``conspo:margin=none`` -> ``conspo-margin_none``."""
    out = spec.replace(":", "-").replace(",", "-").replace("=", "_")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", out)
