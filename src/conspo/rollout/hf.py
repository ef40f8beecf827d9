"""Generation with Hugging Face ``model.generate`` (KV cache, left padding, batched by rows)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from transformers import LogitsProcessorList

from conspo.rollout.backend import Rollout, SamplingParams
from conspo.rollout.seeded import SeededSampler, row_uniforms

__all__ = ["ChunkedGenerator", "HFGenerator", "stop_token_ids"]

# Every logits processor `generate` could pull in from a model's generation_config.json or from
# transformers' global defaults (top_k=50!) is set explicitly, so sampling is exactly temperature +
# top-p: the trainer recomputes log-probs of these samples and assumes this distribution.
_PURE_SAMPLING: dict[str, Any] = {
    "num_beams": 1,
    "num_return_sequences": 1,
    "top_k": 0,
    "min_p": None,
    "typical_p": 1.0,
    "epsilon_cutoff": 0.0,
    "eta_cutoff": 0.0,
    "repetition_penalty": 1.0,
    "no_repeat_ngram_size": 0,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "min_new_tokens": 0,
    "length_penalty": 1.0,
    "renormalize_logits": False,
    "use_cache": True,
}


def stop_token_ids(tokenizer: Any, model: Any = None) -> list[int]:
    """The ids that end a completion: the tokenizer's EOS plus the model's generation-config EOS ids."""
    ids: list[int] = []
    candidates: list[Any] = [getattr(tokenizer, "eos_token_id", None)]
    gen_config = getattr(model, "generation_config", None)
    if gen_config is not None:
        candidates.append(getattr(gen_config, "eos_token_id", None))
    for value in candidates:
        for token_id in value if isinstance(value, (list, tuple)) else [value]:
            if token_id is not None and int(token_id) not in ids:
                ids.append(int(token_id))
    return ids


def _model_device(model: Any) -> torch.device:
    device = getattr(model, "device", None)
    if isinstance(device, torch.device):
        return device
    return next(model.parameters()).device


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    # Dropout off while sampling; the caller's mode (usually train) comes back afterwards.
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def _seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class ChunkedGenerator:
    """What every row-chunked backend shares: argument checks, prompt encoding, chunks of rows, RNG, mode.

    ``generate`` repeats each prompt ``n`` times (consecutively), cuts the rows into chunks of
    ``batch_size``, and calls ``_generate_chunk`` on each under ``torch.inference_mode()``, with the model in
    eval mode (its previous mode restored) and the torch RNG seeded by ``params.seed`` (restored afterwards).
    A subclass implements ``_generate_chunk``; :func:`left_pad` and :func:`rollouts_from_tokens` are the
    common input and output steps.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 32,
        *,
        add_special_tokens: bool | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        name = type(self).__name__
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"{name} batch_size must be a positive int, got {batch_size!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.add_special_tokens = add_special_tokens
        self.progress = progress
        self.stop_ids = stop_token_ids(tokenizer, model)
        if not self.stop_ids:
            raise ValueError(f"{name}: the tokenizer has no eos_token_id; completions could never stop")
        pad = getattr(tokenizer, "pad_token_id", None)
        # A pad id is only a filler under attention_mask=0; EOS is the usual stand-in.
        self.pad_id = int(pad) if pad is not None else self.stop_ids[0]

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of one prompt, as they are fed to the model."""
        add = self.add_special_tokens
        if add is None:
            bos = getattr(self.tokenizer, "bos_token", None)
            add = not (isinstance(bos, str) and bos and prompt.startswith(bos))
        return list(self.tokenizer(prompt, add_special_tokens=add)["input_ids"])

    def _rows(
        self, prompts: Sequence[str], n: int, params: SamplingParams, row_seeds: Sequence[int] | None
    ) -> tuple[list[list[int]], list[int], list[int] | None]:
        """The checks every ``generate`` makes, then (encoded prompts, prompt index per row, row seeds)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"generate: n must be a positive int, got {n!r}")
        if not isinstance(params, SamplingParams):
            raise TypeError(f"generate: params must be SamplingParams, got {type(params).__name__}")
        if isinstance(prompts, str):
            raise TypeError("generate: prompts must be a list of strings, not one string")
        encoded = [self.encode_prompt(p) for p in prompts]
        for i, ids in enumerate(encoded):
            if not ids:
                raise ValueError(f"generate: prompt {i} encodes to zero tokens")
        rows = [i for i in range(len(encoded)) for _ in range(n)]
        if row_seeds is not None:
            row_seeds = [int(s) for s in row_seeds]
            if len(row_seeds) != len(rows):
                raise ValueError(
                    f"generate: row_seeds has {len(row_seeds)} seeds for {len(rows)} rows (prompts x n)"
                )
        return encoded, rows, row_seeds

    def generate(
        self,
        prompts: Sequence[str],
        n: int,
        params: SamplingParams,
        *,
        row_seeds: Sequence[int] | None = None,
    ) -> list[Rollout]:
        """``len(prompts) * n`` rollouts; prompt ``i``'s samples are ``result[i*n:(i+1)*n]``.

        ``row_seeds`` (one int per row, in that order) gives every row its own random stream
        (:mod:`conspo.rollout.seeded`): a row's completion then depends on its prompt and seed only, not on
        the batch it is generated in; ``params.seed`` is not used then.
        """
        encoded, rows, row_seeds = self._rows(prompts, n, params, row_seeds)
        device = _model_device(self.model)
        rollouts: list[Rollout] = []
        call_seed = params.seed if row_seeds is None else None
        with _eval_mode(self.model), torch.inference_mode(), _seeded(call_seed, device):
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                uniforms = None
                if row_seeds is not None and not params.greedy:
                    seeds = row_seeds[start : start + self.batch_size]
                    uniforms = row_uniforms(seeds, params.max_new_tokens, device)
                rollouts.extend(
                    self._generate_chunk([encoded[i] for i in chunk], chunk, params, device, uniforms)
                )
                if self.progress is not None:
                    self.progress(len(rollouts), len(rows))
        return rollouts

    def _generate_chunk(
        self,
        prompt_ids: list[list[int]],
        prompt_index: list[int],
        params: SamplingParams,
        device: torch.device,
        uniforms: torch.Tensor | None = None,
    ) -> list[Rollout]:
        """Rollouts of one chunk; with ``uniforms [rows, max_new_tokens]`` (per-row seeded sampling) the token
        of row ``r`` at step ``t`` is ``sample_from_uniforms(logits, params, uniforms[:, t])``."""
        raise NotImplementedError

    def left_pad(self, prompt_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(input_ids, attention_mask)`` [rows, longest prompt] on the CPU; every prompt ends at the last column."""
        width = max(len(ids) for ids in prompt_ids)
        input_ids = torch.full((len(prompt_ids), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompt_ids), width), dtype=torch.long)
        for row, ids in enumerate(prompt_ids):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        return input_ids, attention_mask

    def rollouts_from_tokens(
        self,
        generated: list[list[int]],
        prompt_ids: list[list[int]],
        prompt_index: list[int],
        params: SamplingParams,
    ) -> list[Rollout]:
        """One :class:`Rollout` per row of generated ids: cut after the first stop id (kept), else truncated."""
        stop = set(self.stop_ids)
        result = []
        for row, tokens in enumerate(generated):
            end = next((t + 1 for t, tok in enumerate(tokens) if tok in stop), None)
            completion = tokens[:end] if end is not None else tokens[: params.max_new_tokens]
            text_ids = completion[:-1] if end is not None else completion
            result.append(
                Rollout(
                    prompt_index=prompt_index[row],
                    prompt_ids=list(prompt_ids[row]),
                    completion_ids=completion,
                    text=self.tokenizer.decode(text_ids, skip_special_tokens=True),
                    truncated=end is None,
                )
            )
        return result


class HFGenerator(ChunkedGenerator):
    """Sample completions with ``model.generate``; implements :class:`~conspo.rollout.GenerationBackend`.

    Rows (prompt i repeated ``n`` times, consecutively) are generated in chunks of ``batch_size`` rows,
    each chunk left-padded to its longest prompt. Sampling is plain temperature + top-p (no top-k,
    no repetition penalty, whatever the model's ``generation_config`` says); ``temperature == 0`` is
    greedy. With ``params.seed`` set the result is reproducible for the same prompts and batch size.

    Args:
        model: any Hugging Face causal LM (``AutoModelForCausalLM``); it is put in eval mode while
            generating and its previous mode is restored.
        tokenizer: its tokenizer. It is not modified (padding is done here).
        batch_size: rows (prompts x n) per ``generate`` call; bounds memory.
        add_special_tokens: whether tokenizing a prompt adds BOS etc. ``None`` (default) adds them
            unless the prompt text already starts with the tokenizer's BOS string (a chat template
            already rendered it).
        progress: optional callback ``progress(rows_done, rows_total)`` called after each chunk.
    """

    def _generate_chunk(
        self,
        prompt_ids: list[list[int]],
        prompt_index: list[int],
        params: SamplingParams,
        device: torch.device,
        uniforms: torch.Tensor | None = None,
    ) -> list[Rollout]:
        input_ids, attention_mask = self.left_pad(prompt_ids)
        width = input_ids.shape[1]
        sampling: dict[str, Any] = (
            {"do_sample": True, "temperature": float(params.temperature), "top_p": float(params.top_p)}
            if not params.greedy
            else {"do_sample": False, "temperature": 1.0, "top_p": 1.0}
        )
        if uniforms is not None:  # per-row seeds: the processor draws, generate takes its argmax
            sampling = {
                "do_sample": False,
                "temperature": 1.0,
                "top_p": 1.0,
                "logits_processor": LogitsProcessorList([SeededSampler(params, uniforms, width)]),
            }
        output = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            max_new_tokens=params.max_new_tokens,
            eos_token_id=self.stop_ids,
            pad_token_id=self.pad_id,
            **sampling,
            **_PURE_SAMPLING,
        )
        generated = output[:, width:].tolist()  # [rows, <= max_new_tokens]
        return self.rollouts_from_tokens(generated, prompt_ids, prompt_index, params)
