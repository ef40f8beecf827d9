"""Per-token log-probabilities of completions under a model (what the trainer's scores are made of).

Layout of one padded batch (``P`` = longest prompt, ``T`` = longest completion)::

    [pad .. pad | prompt ids | completion ids | pad .. pad]     # [B, P + T]
     left-padded prompts           right-padded completions

so every completion starts at column ``P`` and its token ``t`` is predicted by the logits at column
``P + t - 1``. Position ids count real tokens only (``cumsum(attention_mask) - 1``), as ``generate``
does under left padding, so the log-probs match the ones the sampler used.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from conspo.rollout.backend import Rollout

__all__ = ["CompletionBatch", "build_completion_batch", "completion_logprobs", "selected_token_logprobs"]


@dataclass
class CompletionBatch:
    """Prompt + completion token ids, padded as described in the module docstring."""

    input_ids: torch.Tensor  # [B, P + T] long
    attention_mask: torch.Tensor  # [B, P + T] long, 1 = real token
    position_ids: torch.Tensor  # [B, P + T] long
    completion_ids: torch.Tensor  # [B, T] long (pad where mask is 0)
    completion_mask: torch.Tensor  # [B, T] bool, 1 = real completion token
    prompt_width: int  # P

    def to(self, device: torch.device | str) -> CompletionBatch:
        return CompletionBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.position_ids.to(device),
            self.completion_ids.to(device),
            self.completion_mask.to(device),
            self.prompt_width,
        )


def _pairs(rollouts_or_ids: Sequence[Rollout] | Sequence[tuple[Sequence[int], Sequence[int]]]) -> list[tuple]:
    pairs = []
    for i, item in enumerate(rollouts_or_ids):
        if isinstance(item, Rollout):
            pairs.append((item.prompt_ids, item.completion_ids))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            pairs.append((list(item[0]), list(item[1])))
        else:
            raise TypeError(
                f"row {i}: expected a Rollout or a (prompt_ids, completion_ids) pair, got {item!r:.80}"
            )
        if not pairs[-1][0]:
            raise ValueError(f"row {i}: empty prompt_ids (a completion needs a prompt to condition on)")
    return pairs


def build_completion_batch(
    rollouts_or_ids: Sequence[Rollout] | Sequence[tuple[Sequence[int], Sequence[int]]], pad_token_id: int = 0
) -> CompletionBatch:
    """Pad rollouts (or ``(prompt_ids, completion_ids)`` pairs) into one :class:`CompletionBatch`."""
    pairs = _pairs(rollouts_or_ids)
    if not pairs:
        raise ValueError("build_completion_batch: no rows")
    width = max(len(p) for p, _ in pairs)
    length = max(1, max(len(c) for _, c in pairs))  # T >= 1 keeps shapes valid for all-empty completions
    batch = len(pairs)
    input_ids = torch.full((batch, width + length), int(pad_token_id), dtype=torch.long)
    attention_mask = torch.zeros((batch, width + length), dtype=torch.long)
    for row, (prompt, completion) in enumerate(pairs):
        input_ids[row, width - len(prompt) : width] = torch.as_tensor(prompt, dtype=torch.long)
        attention_mask[row, width - len(prompt) : width] = 1
        if completion:
            input_ids[row, width : width + len(completion)] = torch.as_tensor(completion, dtype=torch.long)
            attention_mask[row, width : width + len(completion)] = 1
    position_ids = (attention_mask.cumsum(dim=1) - 1).clamp(min=0)
    completion_mask = attention_mask[:, width:].bool()
    return CompletionBatch(
        input_ids, attention_mask, position_ids, input_ids[:, width:].clone(), completion_mask, width
    )


def selected_token_logprobs(
    logits: torch.Tensor, token_ids: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """``log softmax(logits / temperature)[token]`` per position, in fp32, without a ``[B, T, V]`` fp32 copy.

    ``logits`` is ``[B, T, V]`` (any float dtype), ``token_ids`` ``[B, T]``. The normalizer is a
    row-by-row fp32 ``logsumexp``, so peak extra memory is one ``[T, V]`` fp32 slice, not the batch.
    """
    selected = torch.gather(logits, -1, token_ids.unsqueeze(-1)).squeeze(-1).float() / temperature  # [B, T]
    normalizer = torch.stack([torch.logsumexp(row.float() / temperature, dim=-1) for row in logits])  # [B, T]
    return selected - normalizer


def _accepts_logits_to_keep(model: Any) -> bool:
    inner = getattr(model, "module", model)  # DDP / accelerate wrappers forward **kwargs to the real model
    base = getattr(inner, "get_base_model", None)  # so do peft models (and the trainer's AdapterDisabled)
    if callable(base):
        inner = base()
    try:
        return "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False


def completion_logits(
    model: Any, batch: CompletionBatch, *, autocast_dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, CompletionBatch]:
    """One forward pass over ``batch``: the logits that predict its completion tokens, ``[B, T, V]``.

    The shared forward of :func:`completion_logprobs` and the trainer's ``sequence_forward`` (not exported).
    Returns the logits with ``batch`` moved to the model's device. Gradients flow unless called under
    ``torch.no_grad()``; with ``autocast_dtype`` the forward runs under ``torch.autocast`` in that dtype.
    """
    device = next(model.parameters()).device
    batch = batch.to(device)
    length = batch.completion_ids.shape[1]
    kwargs: dict[str, Any] = {
        "input_ids": batch.input_ids,
        "attention_mask": batch.attention_mask,
        "position_ids": batch.position_ids,
        "use_cache": False,
    }
    if _accepts_logits_to_keep(model):
        # Only the T+1 last positions feed the loss: skip the lm_head on the prompt.
        kwargs["logits_to_keep"] = length + 1
    if autocast_dtype is not None:
        with torch.autocast(device_type=device.type, dtype=autocast_dtype):
            logits = model(**kwargs).logits  # [B, T+1 or P+T, V]
    else:
        logits = model(**kwargs).logits  # [B, T+1 or P+T, V]
    return logits[:, -(length + 1) : -1], batch  # [B, T, V]: column P+t-1 predicts completion token t


def completion_logprobs(
    model: Any,
    rollouts_or_ids: Sequence[Rollout] | Sequence[tuple[Sequence[int], Sequence[int]]] | CompletionBatch,
    *,
    pad_token_id: int = 0,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token ``log pi(o_t | q, o_<t)`` of each completion: ``(token_logps [B, T] fp32, mask [B, T] bool)``.

    Runs one forward pass over the whole batch (micro-batch outside if needed). Gradients flow when
    called outside ``torch.no_grad()``, so the same function gives scores with grad and old/reference
    log-probs without. Logits are divided by ``temperature`` before the fp32 log-softmax; use the
    sampling temperature (the paper's rollouts use 1.0). Padding positions hold 0 and mask 0.
    """
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"completion_logprobs: temperature must be > 0, got {temperature!r}")
    batch = (
        rollouts_or_ids
        if isinstance(rollouts_or_ids, CompletionBatch)
        else build_completion_batch(rollouts_or_ids, pad_token_id)
    )
    logits, batch = completion_logits(model, batch)
    token_logps = selected_token_logprobs(logits, batch.completion_ids, temperature)
    mask = batch.completion_mask
    return token_logps.masked_fill(~mask, 0.0), mask
