"""Generation backends behind one small interface.

```python
generator = HFGenerator(model, tokenizer, batch_size=32)  # or KVCacheGenerator(...), same contract
generator = make_generator(model, tokenizer, backend="kv_cache", batch_size=32)  # by name: "hf" | "kv_cache"
rollouts = generator.generate(prompts, n=8, params=SamplingParams(temperature=1.0, max_new_tokens=512))
# len(rollouts) == len(prompts) * 8; prompt i's samples are rollouts[i*8:(i+1)*8]
token_logps, mask = completion_logprobs(model, rollouts, pad_token_id=tokenizer.pad_token_id)
```

A faster engine only has to implement :class:`GenerationBackend` (one ``generate`` method).
"""

from __future__ import annotations

from conspo.rollout.backend import GenerationBackend, Rollout, SamplingParams
from conspo.rollout.factory import GENERATION_BACKENDS, make_generator
from conspo.rollout.hf import ChunkedGenerator, HFGenerator, stop_token_ids
from conspo.rollout.kv_cache import KVCacheGenerator, sample_next_tokens
from conspo.rollout.logprobs import (
    CompletionBatch,
    build_completion_batch,
    completion_logprobs,
    selected_token_logprobs,
)
from conspo.rollout.seeded import row_uniforms, sample_from_uniforms
from conspo.rollout.vllm import VLLMEngine, VLLMGenerator

__all__ = [
    "GENERATION_BACKENDS",
    "ChunkedGenerator",
    "CompletionBatch",
    "GenerationBackend",
    "HFGenerator",
    "KVCacheGenerator",
    "Rollout",
    "SamplingParams",
    "VLLMEngine",
    "VLLMGenerator",
    "build_completion_batch",
    "completion_logprobs",
    "make_generator",
    "row_uniforms",
    "sample_from_uniforms",
    "sample_next_tokens",
    "selected_token_logprobs",
    "stop_token_ids",
]
