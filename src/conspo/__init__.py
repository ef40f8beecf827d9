"""conspo: ConSPO (Contrastive Sequence-level Policy Optimization) for RL from verifiable rewards.

Importing ``conspo`` is cheap and has no side effects: subpackages load on first use.

- ``conspo.objectives``: ConSPO, its ablations and the paper's baselines (torch only).
- ``conspo.rewards``: process-isolated math answer verification (no torch).
- ``conspo.data`` / ``conspo.testbed``: datasets, prompt templates, the built-in CPU testbed.
- ``conspo.rollout``: generation backends.
- ``conspo.trainer``: the RLVR training loop (``conspo train``).
- ``conspo.eval``: avg@k / pass@k / maj@k benchmark evaluation (``conspo eval``).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
