"""Generation with a plain KV-cache sampling loop over the model's forward (no ``model.generate``).

Same contract and sampling as :class:`~conspo.rollout.HFGenerator`, less machinery per step: one
``model(input_ids, attention_mask, position_ids, cache, use_cache=True)`` call, an fp32 temperature +
top-p draw, and the bookkeeping of which rows have finished. On small models, where a step costs
Python and kernel-launch overhead rather than arithmetic, that is what makes it faster.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from transformers import DynamicCache

from conspo.rollout.backend import Rollout, SamplingParams
from conspo.rollout.hf import ChunkedGenerator
from conspo.rollout.seeded import sample_from_uniforms, sampling_probs

__all__ = ["KVCacheGenerator", "sample_next_tokens"]


def sample_next_tokens(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Next token per row from ``logits [B, V]``: argmax when greedy, else temperature + top-p in fp32.

    Top-p is the nucleus rule ``generate`` uses (``TopPLogitsWarper``): sort ascending, drop the tokens whose
    cumulative probability stays at or below ``1 - top_p``, always keep the most likely token.
    """
    if params.greedy:
        return logits.float().argmax(dim=-1)
    return torch.multinomial(sampling_probs(logits, params), num_samples=1).squeeze(1)


def _forward_parameters(model: Any) -> set[str]:
    try:
        return set(inspect.signature(model.forward).parameters)
    except (TypeError, ValueError):
        return set()


def _new_cache(model: Any) -> DynamicCache:
    config = getattr(model, "config", None)
    if config is not None:
        try:  # with the config, sliding-window and hybrid layers get their own cache layer types
            return DynamicCache(config=config)
        except Exception:  # a config the cache cannot read: a plain cache still works
            pass
    return DynamicCache()


class KVCacheGenerator(ChunkedGenerator):
    """Sample completions with a bare KV-cache loop; implements :class:`~conspo.rollout.GenerationBackend`.

    A drop-in for :class:`~conspo.rollout.HFGenerator` (same constructor, same :class:`Rollout` s, same
    sampling: temperature + top-p in fp32, greedy at temperature 0, no other processor) for any Hugging
    Face causal LM whose forward takes a cache (``cache=`` in transformers 5, ``past_key_values=`` in
    older or remote-code models). Rows (prompt i repeated ``n`` times) go in chunks of ``batch_size``, each
    chunk left-padded to its longest prompt with position ids that count real tokens only (as
    :func:`~conspo.rollout.completion_logprobs` computes them). The prompt is prefilled once into a
    ``transformers.DynamicCache``, then each step feeds one token per row. A row that emitted a stop id
    is finished: it is fed the pad id from then on, and once half the rows of the batch are finished they
    are dropped from the batch and the cache (``compact=False`` keeps every row to the end). The chunk
    stops when every row has finished or after ``max_new_tokens``.

    Greedy output is token-identical to ``HFGenerator``'s up to floating-point ties. Sampled output follows
    the same distribution and is reproducible with ``params.seed`` (for the same prompts, ``batch_size``
    and ``compact``); with ``compact=False`` it is even ``HFGenerator``'s draw (same logits, same fp32
    softmax, one ``multinomial`` per step over the same rows), while dropping rows changes which draws
    the remaining rows get.

    Args:
        model: any Hugging Face causal LM; it is put in eval mode while generating and its previous mode
            is restored.
        tokenizer: its tokenizer. It is not modified (padding is done here).
        batch_size: rows (prompts x n) per chunk; bounds memory.
        add_special_tokens: as in ``HFGenerator`` (``None``: add BOS unless the prompt starts with it).
        progress: optional callback ``progress(rows_done, rows_total)`` called after each chunk.
        compact: drop finished rows from the batch and the cache once half of them are finished.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 32,
        *,
        add_special_tokens: bool | None = None,
        progress: Callable[[int, int], None] | None = None,
        compact: bool = True,
    ) -> None:
        super().__init__(
            model, tokenizer, batch_size, add_special_tokens=add_special_tokens, progress=progress
        )
        self.compact = bool(compact)
        accepted = _forward_parameters(model)
        self._cache_kwarg = "cache" if "cache" in accepted else "past_key_values"
        self._logits_to_keep = "logits_to_keep" in accepted
        self._cache_position = "cache_position" in accepted  # remote-code models of the transformers 4 era

    def _forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor,
        cache: Any,
        past_length: int,
    ) -> tuple[torch.Tensor, Any]:
        """Logits of the last position ``[rows, V]`` and the cache to use next."""
        kwargs: dict[str, Any] = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            self._cache_kwarg: cache,
            "use_cache": True,
        }
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        if self._cache_position:
            kwargs["cache_position"] = torch.arange(
                past_length, past_length + input_ids.shape[1], device=input_ids.device
            )
        out = self.model(**kwargs)
        keys = out.keys() if hasattr(out, "keys") else ()
        returned = next(
            (out[k] for k in ("cache", "past_key_values") if k in keys and out[k] is not None), None
        )
        return out.logits[:, -1, :], returned if returned is not None else cache

    def _generate_chunk(
        self,
        prompt_ids: list[list[int]],
        prompt_index: list[int],
        params: SamplingParams,
        device: torch.device,
        uniforms: torch.Tensor | None = None,
    ) -> list[Rollout]:
        input_ids, attention_mask = self.left_pad(prompt_ids)
        rows, width = input_ids.shape
        max_new = params.max_new_tokens
        # Without padding the mask is dropped, as generate does: attention is then plain causal.
        padded = bool((attention_mask == 0).any())
        position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0).to(device)
        input_ids = input_ids.to(device)
        mask = attention_mask.to(device) if padded else None
        next_position = position_ids[:, -1:] + 1  # [b, 1]
        stop = torch.tensor(self.stop_ids, dtype=torch.long, device=device)
        out = torch.full((rows, max_new), self.pad_id, dtype=torch.long, device=device)
        alive = torch.arange(rows, device=device)  # original row of each row still in the batch
        finished = torch.zeros(rows, dtype=torch.bool, device=device)  # per row still in the batch
        cache = _new_cache(self.model)
        logits, cache = self._forward(input_ids, mask, position_ids, cache, past_length=0)
        past = width
        for step in range(max_new):
            if uniforms is None:
                tokens = sample_next_tokens(logits, params)
            else:  # per-row seeds: each row's draw is its own, whichever rows are still in the batch
                tokens = sample_from_uniforms(logits, params, uniforms[alive, step])
            tokens = tokens.masked_fill(finished, self.pad_id)  # finished rows only ever get pad
            out[alive, step] = tokens
            finished = finished | torch.isin(tokens, stop)
            if step == max_new - 1:
                break
            active = int((~finished).sum())  # the one host sync per step (generate has it too)
            if active == 0:
                break
            if self.compact and active <= finished.numel() // 2:
                keep = (~finished).nonzero().squeeze(1)
                cache.batch_select_indices(keep)
                alive, tokens, next_position = alive[keep], tokens[keep], next_position[keep]
                finished = finished[keep]
                mask = mask[keep] if mask is not None else None
            if mask is not None:
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            logits, cache = self._forward(tokens[:, None], mask, next_position, cache, past_length=past)
            next_position = next_position + 1
            past += 1
        return self.rollouts_from_tokens(out.tolist(), prompt_ids, prompt_index, params)
