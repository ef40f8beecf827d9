"""``conspo compare``: objectives side by side on the CPU testbed, seed by seed, with paired statistics.

The command is ``conspo.compare.cli`` (as every command lives in ``<package>/cli.py``); the grid runner is
``runner``, objective specs ``specs``, the per-objective table ``summary``, the paired differences ``paired``
and the seed-averaged plots ``plots``.
"""

from __future__ import annotations

from conspo.compare.cli import add_arguments, build_runs, run

__all__ = ["add_arguments", "build_runs", "run"]
