"""The rollout batch of one process as the update sees it, and the forward pass that scores it.

``Rows`` keeps the sampled token ids in one padded :class:`~conspo.rollout.CompletionBatch` layout
(left-padded prompts, right-padded completions, every completion starting at the same column), so
any subset of rows - a mini-batch, a micro-batch - is a row slice plus a trim of all-padding columns,
and per-token tensors computed on the whole batch (old and reference log-probs) line up with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from conspo.objectives import RolloutBatch
from conspo.rollout import CompletionBatch, Rollout, build_completion_batch, selected_token_logprobs
from conspo.rollout.logprobs import completion_logits

__all__ = ["Rows", "score_rows", "sequence_forward"]


@dataclass
class Rows:
    """B rollouts of one process: token ids, rewards, labels, groups, truncation flags.

    ``group_ids`` are global prompt ids (unique across processes and steps), so a group never mixes
    prompts. ``old_token_logps`` / ``ref_token_logps`` are ``[B, T]`` on the full layout when computed.
    """

    tokens: CompletionBatch  # input_ids [B, P + T]; completion_mask [B, T]
    rewards: torch.Tensor  # [B] float
    labels: torch.Tensor  # [B] long: 1 positive, 0 negative, -1 invalid
    group_ids: torch.Tensor  # [B] long
    truncated: torch.Tensor  # [B] bool
    old_token_logps: torch.Tensor | None = None  # [B, T]
    ref_token_logps: torch.Tensor | None = None  # [B, T]

    @classmethod
    def from_rollouts(
        cls,
        rollouts: Sequence[Rollout],
        rewards: Sequence[float],
        labels: Sequence[int],
        group_ids: Sequence[int],
        pad_token_id: int,
    ) -> Rows:
        return cls(
            tokens=build_completion_batch(list(rollouts), pad_token_id),
            rewards=torch.tensor(list(rewards), dtype=torch.float32),
            labels=torch.tensor(list(labels), dtype=torch.long),
            group_ids=torch.tensor(list(group_ids), dtype=torch.long),
            truncated=torch.tensor([r.truncated for r in rollouts], dtype=torch.bool),
        )

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def lengths(self) -> torch.Tensor:
        """Completion length of each row in tokens (EOS included), [B]."""
        return self.tokens.completion_mask.sum(-1)

    def select(self, idx: torch.Tensor) -> Rows:
        """Rows ``idx`` (int64), with columns that are padding in every kept row trimmed away."""
        t = self.tokens
        attn = t.attention_mask[idx]
        width = t.prompt_width
        # Left trim: prompt columns that are padding in every kept row.
        prompt_real = attn[:, :width].any(0)
        left = int(prompt_real.float().argmax()) if bool(prompt_real.any()) else width
        # Right trim: keep the longest kept completion (at least one column, as build_completion_batch).
        length = max(1, int(t.completion_mask[idx].sum(-1).max())) if len(idx) else 1
        cols = slice(left, width + length)
        tokens = CompletionBatch(
            input_ids=t.input_ids[idx, cols],
            attention_mask=attn[:, cols],
            position_ids=t.position_ids[idx, cols],
            completion_ids=t.completion_ids[idx, :length],
            completion_mask=t.completion_mask[idx, :length],
            prompt_width=width - left,
        )

        def cut(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[idx, :length]

        return Rows(
            tokens=tokens,
            rewards=self.rewards[idx],
            labels=self.labels[idx],
            group_ids=self.group_ids[idx],
            truncated=self.truncated[idx],
            old_token_logps=cut(self.old_token_logps),
            ref_token_logps=cut(self.ref_token_logps),
        )

    def placeholder(self) -> Rows:
        """The first group, labelled -1: it joins every collective and adds nothing to credit or counts."""
        out = self.select((self.group_ids == self.group_ids[0]).nonzero().squeeze(-1))
        out.labels = torch.full_like(out.labels, -1)
        return out

    def mini_batches(self, k: int) -> list[torch.Tensor]:
        """Row indices of `k` mini-batches of whole groups, as even a split of the groups as possible."""
        groups = torch.unique_consecutive(self.group_ids)
        out = []
        for part in np.array_split(np.arange(len(groups)), k):
            chosen = groups[torch.as_tensor(part, dtype=torch.long)]
            out.append(torch.isin(self.group_ids, chosen).nonzero().squeeze(-1))
        return out

    def to_batch(self, token_logps: torch.Tensor, mask: torch.Tensor, device: torch.device) -> RolloutBatch:
        """The objective's view of these rows with the given per-token log-probs, on `device`."""
        return RolloutBatch(
            token_logps=token_logps,
            mask=mask.to(device),
            group_ids=self.group_ids.to(device),
            rewards=self.rewards.to(device),
            labels=self.labels.to(device),
            old_token_logps=None if self.old_token_logps is None else self.old_token_logps.to(device),
            ref_token_logps=None if self.ref_token_logps is None else self.ref_token_logps.to(device),
        )

    @staticmethod
    def concat(parts: Sequence[Rows], pad_token_id: int) -> Rows:
        """Rows of several batches in one layout (used by dynamic sampling)."""
        pairs: list[tuple[list[int], list[int]]] = []
        for part in parts:
            t = part.tokens
            for b in range(len(part)):
                prompt = t.input_ids[b, : t.prompt_width][t.attention_mask[b, : t.prompt_width].bool()]
                completion = t.completion_ids[b][t.completion_mask[b]]
                pairs.append((prompt.tolist(), completion.tolist()))
        cat = {
            f.name: torch.cat([getattr(p, f.name) for p in parts])
            for f in fields(Rows)
            if f.name not in ("tokens", "old_token_logps", "ref_token_logps")
        }
        return Rows(tokens=build_completion_batch(pairs, pad_token_id), **cat)


def sequence_forward(
    model: Any,
    tokens: CompletionBatch,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Per-token log-probs ``[B, T]`` (fp32), the mask ``[B, T]`` and, optionally, per-token entropy ``[B, T]``.

    Gradients flow unless called under ``torch.no_grad()``. Logits are scaled by the sampling temperature
    (the distribution the rollouts came from). Entropy is computed row by row to bound memory.
    """
    logits, tokens = completion_logits(model, tokens, autocast_dtype=autocast_dtype)  # [B, T, V]
    mask = tokens.completion_mask
    token_logps = selected_token_logprobs(logits, tokens.completion_ids, temperature).masked_fill(~mask, 0.0)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            rows = []
            for row in logits:  # [T, V]
                logp = torch.log_softmax(row.float() / temperature, dim=-1)
                rows.append(-(logp.exp() * logp).sum(-1))
            entropy = torch.stack(rows).masked_fill(~mask, 0.0)
    return token_logps, mask, entropy


@torch.no_grad()
def score_rows(
    model: Any,
    rows: Rows,
    *,
    chunk: int,
    device: torch.device,
    temperature: float = 1.0,
    with_entropy: bool = False,
    autocast_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """No-grad :func:`sequence_forward` of all rows, `chunk` rows at a time, on the full ``[B, T]`` layout."""
    T = rows.tokens.completion_ids.shape[1]
    logps = torch.zeros(len(rows), T, device=device)
    entropy = torch.zeros(len(rows), T, device=device) if with_entropy else None
    for start in range(0, len(rows), chunk):
        idx = torch.arange(start, min(start + chunk, len(rows)))
        lp, _, ent = sequence_forward(
            model,
            rows.select(idx).tokens,
            temperature=temperature,
            with_entropy=with_entropy,
            autocast_dtype=autocast_dtype,
        )
        logps[idx, : lp.shape[1]] = lp
        if with_entropy:
            entropy[idx, : ent.shape[1]] = ent
    return logps, rows.tokens.completion_mask.to(device), entropy
