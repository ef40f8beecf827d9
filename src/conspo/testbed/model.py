"""The tiny testbed policy: a Llama-architecture causal LM built from a config in code.

Llama rather than Qwen2 on purpose: with transformers 5.x a folder saved with a Qwen2 config gets its tokenizer
swapped for ``Qwen2Tokenizer`` on reload, which silently drops the character tokenizer's spaces.
"""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from conspo.testbed.config import TinyModelConfig

__all__ = ["TinyModelConfig", "build_tiny_model", "count_parameters"]


def build_tiny_model(
    tokenizer: PreTrainedTokenizerBase, config: TinyModelConfig | None = None, *, seed: int = 0
) -> LlamaForCausalLM:
    """A randomly initialised (seeded) Llama causal LM sized for ``tokenizer``'s vocabulary."""
    config = config or TinyModelConfig()
    llama = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=config.max_positions,
        tie_word_embeddings=True,  # the embedding is a large share of a model this small
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(llama)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())
