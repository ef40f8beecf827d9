"""Per-row seeded sampling: each row's draws come from its own seed, whatever the batch around it.

``generate(..., row_seeds=[...])`` gives row ``r`` its own random stream: ``max_new_tokens`` uniforms drawn
up front from a CPU ``torch.Generator`` seeded with ``row_seeds[r]``, and at step ``t`` the token is the
inverse CDF of the (temperature + top-p) distribution at ``u[r, t]``. So a row's completion depends only on
its prompt, its seed and the model's logits: not on how rows are batched, chunked, compacted, or which other
rows share the call. This is what lets an evaluation mix cached and freshly generated samples and still equal
a fresh run (``conspo.eval.runner`` seeds each sample by what it is).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import LogitsProcessor

from conspo.rollout.backend import SamplingParams

__all__ = ["SeededSampler", "row_uniforms", "sample_from_uniforms", "sampling_probs"]


def sampling_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """fp32 probabilities ``[B, V]`` after temperature and top-p (the rule of ``generate``'s ``TopPLogitsWarper``:
    sort ascending, drop the tokens whose cumulative probability stays at or below ``1 - top_p``, always keep
    the most likely token)."""
    scores = logits.float()
    if params.temperature != 1.0:
        scores = scores / params.temperature
    if params.top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        drop_sorted = sorted_scores.softmax(dim=-1).cumsum(dim=-1) <= (1 - params.top_p)
        drop_sorted[..., -1:] = False
        scores = scores.masked_fill(drop_sorted.scatter(1, order, drop_sorted), -float("inf"))
    return scores.softmax(dim=-1)


def row_uniforms(seeds: Sequence[int], steps: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``[len(seeds), steps]`` float64 uniforms in [0, 1); row ``r`` from a CPU generator seeded ``seeds[r]``
    (drawn on the CPU so that the numbers are the same on every device)."""
    out = torch.empty((len(seeds), steps), dtype=torch.float64)
    generator = torch.Generator()
    for row, seed in enumerate(seeds):
        generator.manual_seed(int(seed))
        out[row] = torch.rand(steps, generator=generator, dtype=torch.float64)
    return out.to(device)


def sample_from_uniforms(
    logits: torch.Tensor, params: SamplingParams, uniforms: torch.Tensor
) -> torch.Tensor:
    """Next token per row of ``logits [B, V]``: argmax when greedy, else the inverse CDF of the temperature +
    top-p distribution at ``uniforms [B]`` (a row's token depends on that row alone)."""
    if params.greedy:
        return logits.float().argmax(dim=-1)
    probs = sampling_probs(logits, params).double()
    cdf = probs.cumsum(dim=-1)
    target = uniforms.to(cdf.device, torch.float64).unsqueeze(1) * cdf[:, -1:]
    token = torch.searchsorted(cdf, target, right=True).squeeze(1)
    # Rounding can put the target at the very top: fall back to the last token with any probability.
    vocab = probs.shape[-1]
    last_possible = vocab - 1 - (probs > 0).flip(-1).int().argmax(dim=-1)
    return torch.minimum(token, last_possible)


class SeededSampler(LogitsProcessor):
    """A ``generate`` logits processor that does the sampling itself, row by row from ``uniforms``.

    ``generate`` runs greedy (``do_sample=False``) with this processor last: it returns 0 at the token drawn by
    :func:`sample_from_uniforms` and -inf elsewhere, so the argmax is that token.
    """

    def __init__(self, params: SamplingParams, uniforms: torch.Tensor, prompt_width: int) -> None:
        self.params = params
        self.uniforms = uniforms
        self.prompt_width = prompt_width

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> Any:
        step = input_ids.shape[1] - self.prompt_width
        token = sample_from_uniforms(scores, self.params, self.uniforms[:, step])
        out = torch.full_like(scores, -float("inf"))
        return out.scatter_(1, token.unsqueeze(1), 0.0)
