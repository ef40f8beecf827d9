"""Per-rollout scores s(o) and per-token helpers. Inputs of any float dtype; results are float32 or wider.

Masked positions may hold anything (padding garbage, -inf): they are replaced, not multiplied, so no NaN leaks.
"""

from __future__ import annotations

import torch

__all__ = [
    "MAX_LOG_RATIO",
    "at_least_fp32",
    "clipped_ratio_score",
    "k3_kl",
    "likelihood_ratio_score",
    "masked_fraction",
    "masked_token_mean",
    "masked_token_sum",
    "response_lengths",
    "sequence_logprob_score",
    "token_log_ratio",
]

MAX_LOG_RATIO = 20.0
"""|log pi_theta/pi_old| is clamped here before exp, so extreme log-probs cannot overflow (as verl does)."""


def at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or as it is when already float32/float64."""
    # Reductions over thousands of tokens lose too much in fp16/bf16.
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _bool_mask(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.dtype == torch.bool else mask != 0


def response_lengths(mask: torch.Tensor) -> torch.Tensor:
    """|o_i| as float32 [B] (0 for an empty response)."""
    return _bool_mask(mask).sum(-1).float()


def masked_token_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum_t values[i, t] over real tokens, float32 [B]."""
    values = at_least_fp32(values)
    return torch.where(_bool_mask(mask), values, torch.zeros_like(values)).sum(-1)


def masked_token_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(1/|o_i|) sum_t values[i, t]; an empty response gives 0."""
    return masked_token_sum(values, mask) / response_lengths(mask).clamp(min=1).to(
        at_least_fp32(values).dtype
    )


def masked_fraction(flags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fraction of real tokens where `flags` holds (0-dim, detached)."""
    mask = _bool_mask(mask)
    return ((flags & mask).sum().float() / mask.sum().clamp(min=1).float()).detach()


def sequence_logprob_score(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """ConSPO's score: s_theta(o, q) = (1/|o|) sum_t log pi_theta(o_t | q, o_<t), float32 [B] (Sec. 4.2)."""
    return masked_token_mean(token_logps, mask)


def token_log_ratio(token_logps: torch.Tensor, old_token_logps: torch.Tensor | None) -> torch.Tensor:
    """log rho_t = log pi_theta - log pi_old in float32, clamped to +-MAX_LOG_RATIO.

    `old_token_logps=None` means on-policy: old = current, detached (rho = 1 with the gradient of pi_theta).
    """
    token_logps = at_least_fp32(token_logps)
    old = token_logps.detach() if old_token_logps is None else at_least_fp32(old_token_logps)
    return (token_logps - old).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)


def clipped_ratio_score(
    token_logps: torch.Tensor,
    old_token_logps: torch.Tensor | None,
    mask: torch.Tensor,
    positive: torch.Tensor,
    clip_eps: float = 0.2,
) -> torch.Tensor:
    """GRPO's surrogate scores (Eq. 6), float32 [B].

    s+(o) = (1/|o|) sum_t min(rho_t, 1 + eps) for positives, s-(o) = (1/|o|) sum_t max(rho_t, 1 - eps)
    for every other row (`positive` is a [B] bool).
    """
    ratio = torch.exp(token_log_ratio(token_logps, old_token_logps))
    upper = ratio.clamp(max=1.0 + clip_eps)
    lower = ratio.clamp(min=1.0 - clip_eps)
    return masked_token_mean(torch.where(positive[:, None], upper, lower), mask)


def likelihood_ratio_score(
    token_logps: torch.Tensor, old_token_logps: torch.Tensor | None, mask: torch.Tensor
) -> torch.Tensor:
    """DisCO's L-ratio score: (1/|o|) sum_t pi_theta(o_t) / pi_old(o_t), float32 [B]."""
    return masked_token_mean(torch.exp(token_log_ratio(token_logps, old_token_logps)), mask)


def k3_kl(token_logps: torch.Tensor, ref_token_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi_theta || pi_ref): exp(ref - logp) - (ref - logp) - 1, float32 [B, T].

    Schulman's low-variance estimator, as in TRL (`beta`) and verl (`low_var_kl`); the log-ratio is clamped
    to +-MAX_LOG_RATIO so extreme log-probs stay finite.
    """
    diff = (at_least_fp32(ref_token_logps) - at_least_fp32(token_logps)).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    return torch.exp(diff) - diff - 1.0
