"""ConSPO inside the trainers people already run.

Nothing here is imported eagerly: each integration imports its framework, so load it by name.

- ``conspo.integrations.trl``: ``ConSPOConfig`` / ``ConSPOTrainer``, a TRL ``GRPOTrainer`` that trains with
  ConSPO (``pip install conspo[trl]``; tested with trl 1.16).
- ``conspo.integrations.verl``: a verl plugin loaded with ``VERL_USE_EXTERNAL_MODULES=conspo.integrations.verl``;
  it registers the ``conspo`` advantage estimator, the ``conspo_seq`` policy loss, the ``conspo_sync`` V1 trainer
  and exposes ``compute_score`` (tested with verl 0.9.1, in its own environment: ``make test-verl``).

See ``docs/integrations.md``.
"""

from __future__ import annotations

__all__: list[str] = []
