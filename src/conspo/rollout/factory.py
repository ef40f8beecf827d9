"""Pick a generation backend by name: ``make_generator(model, tokenizer, backend="kv_cache")``."""

from __future__ import annotations

from typing import Any

from conspo.rollout.hf import ChunkedGenerator, HFGenerator
from conspo.rollout.kv_cache import KVCacheGenerator
from conspo.rollout.vllm import VLLMGenerator  # imports vllm only when one is built

__all__ = ["GENERATION_BACKENDS", "make_generator"]

GENERATION_BACKENDS: dict[str, type[ChunkedGenerator]] = {
    "hf": HFGenerator,
    "kv_cache": KVCacheGenerator,
    "vllm": VLLMGenerator,
}
"""Backend names a config or a command line can use, and their classes."""


def make_generator(
    model: Any, tokenizer: Any, backend: str = "hf", batch_size: int = 32, **kwargs: Any
) -> ChunkedGenerator:
    """The generator named ``backend`` (``"hf"``: ``HFGenerator``, ``"kv_cache"``: ``KVCacheGenerator``,
    ``"vllm"``: ``VLLMGenerator``, which builds a new engine unless ``engine=`` is passed).

    ``batch_size`` and ``kwargs`` (``add_special_tokens``, ``progress``; ``compact`` for ``kv_cache``) go
    to the class's constructor.
    """
    try:
        cls = GENERATION_BACKENDS[backend]
    except (KeyError, TypeError):
        names = ", ".join(sorted(GENERATION_BACKENDS))
        raise ValueError(f"unknown generation backend {backend!r}; choose one of: {names}") from None
    return cls(model, tokenizer, batch_size=batch_size, **kwargs)
