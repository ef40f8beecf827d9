"""Shared test set-up: offline hub, quiet tokenizers, the path to the shared benchmark data, trainer fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Nothing may reach the Hugging Face Hub from a test.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CONSPO_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real public math benchmarks in JSON Lines (`../shared/data`); tests read, never copy, them."""
    if not (SHARED_DATA / "math500.jsonl").exists():
        pytest.fail(f"shared data not found at {SHARED_DATA}; set CONSPO_DATA_DIR")
    return SHARED_DATA


@pytest.fixture(scope="session")
def testbed_policy_dir() -> Path:
    """The default warm-started testbed policy (AutoModelForCausalLM-loadable folder), built once and cached.

    The cache is ``$CONSPO_CACHE/testbed`` or ``~/.cache/conspo/testbed``, keyed by the configuration hash, so
    later sessions reuse it; the first build takes well under a minute on one core.
    """
    from conspo.testbed import ensure_testbed_policy

    return ensure_testbed_policy()


@pytest.fixture(scope="module")
def random_policy(tmp_path_factory) -> Path:
    """A randomly initialised tiny Llama with the testbed's tokenizer (no warm start needed), one per module."""
    from trainer_support import save_random_policy

    return save_random_policy(tmp_path_factory.mktemp("policy"))


@pytest.fixture()
def parity_math_verifier(monkeypatch):
    """The trainer's reward function scores with :class:`trainer_support.ParityVerifier` (no math-verify)."""
    import conspo.rewards
    from trainer_support import ParityVerifier

    monkeypatch.setattr(conspo.rewards.reward_fn, "MathVerifier", ParityVerifier)
