"""Atomic, unpickling-free training checkpoints: model, optimizer, scheduler, RNG and data position.

A checkpoint is one folder, ``run_dir/checkpoint-{step:06d}/``:

```
checkpoint-000120/
  model.safetensors     weights (safetensors; tied weights stored once)
  config.json           the model config when the model has one, so the folder loads with from_pretrained
  (a LoRA policy, a peft model, instead: adapter_model.safetensors + adapter_config.json, the adapter alone,
  loadable with peft's PeftModel.from_pretrained; the frozen base is reloaded from model.name_or_path)
  optimizer.pt          optimizer.state_dict()  (torch.save, loads with weights_only=True)
  scheduler.pt          scheduler.state_dict()  (same)
  rng_state.pt          python random, numpy, torch CPU and CUDA generator states (same)
  checkpoint.json       the manifest, written last: step, data_state, extra, and every file's size
```

Atomicity: everything is written into a hidden temporary folder inside ``run_dir``, each file is fsynced,
the manifest goes last, then one ``os.replace`` gives the folder its final name. A kill before the rename
leaves only the hidden folder (ignored, removed by the next save); a folder whose manifest is missing,
unreadable or disagrees with the files on disk (a copy cut short, a disk error) is skipped by
`latest_checkpoint` with a warning and refused by `load_checkpoint` with an error naming the file.

Nothing is unpickled: weights load with safetensors, the rest with ``torch.load(weights_only=True)``,
and the manifest is JSON.

Rotation (``keep_last=k``) keeps the ``k`` newest checkpoints and never deletes the newest one nor the
newest checkpoint marked best. The trainer marks a checkpoint best by saving it with
``extra={"best": True, ...}`` (the key is `BEST_KEY`); an older best checkpoint loses its protection when a
newer one is marked.

Distributed use (accelerate): call `save_checkpoint` on every process with
``is_main_process=accelerator.is_main_process`` and the unwrapped model
(``accelerator.unwrap_model(model)``; unwrapping is the caller's job), then ``accelerator.wait_for_everyone()``
before any process reads the folder. Only the main process writes. The RNG states saved are the main
process's; on the other processes load with ``restore_rng=False`` and re-seed from (seed, rank, step).

Why one file of about 560 lines: the writer, the reader and the validator of one folder format live together,
so they cannot disagree about it.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import re
import shutil
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model

__all__ = [
    "BEST_KEY",
    "CheckpointError",
    "CheckpointState",
    "DiskFullError",
    "is_disk_full",
    "MANIFEST_NAME",
    "checkpoint_dir",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "checkpoint.json"
"""The manifest; its presence (written last) is what makes a checkpoint folder complete."""

BEST_KEY = "best"
"""``extra[BEST_KEY] = True`` marks a checkpoint as the best one; rotation never deletes the newest such."""

FORMAT_VERSION = 1
_WEIGHTS = "model.safetensors"
_ADAPTER = "adapter_model.safetensors"  # a peft model's checkpoint: its adapter only
_OPTIMIZER = "optimizer.pt"
_SCHEDULER = "scheduler.pt"
_RNG = "rng_state.pt"
_NAME_RE = re.compile(r"^checkpoint-(\d+)$")
_TMP_PREFIX = ".tmp-checkpoint-"
_TRASH_PREFIX = ".trash-checkpoint-"


class CheckpointError(RuntimeError):
    """A checkpoint is missing a file, is corrupt, or does not fit the model/optimizer it is loaded into."""


class DiskFullError(CheckpointError):
    """The disk filled up while a checkpoint was written; the partial copy is gone, older checkpoints are intact."""


def is_disk_full(exc: BaseException) -> bool:
    """``exc`` (or an exception it was raised from) is "no space left on device" / "disk quota exceeded"."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return True  # safetensors reports it as its own error type, with the OS message inside
        exc = exc.__cause__ or exc.__context__
    return False


@dataclass
class CheckpointState:
    """What `load_checkpoint` returns besides the state it loads into the objects passed to it."""

    step: int
    """The optimizer step the checkpoint was taken after."""
    data_state: dict = field(default_factory=dict)
    """The data position the trainer saved (e.g. epoch, index into the prompt order)."""
    extra: dict = field(default_factory=dict)
    """Anything else the trainer saved (best metric, ``best`` flag, config hash)."""
    path: Path | None = None
    """The checkpoint folder it came from."""


def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    """The folder name a checkpoint of ``step`` gets: ``run_dir/checkpoint-{step:06d}``."""
    return Path(run_dir) / f"checkpoint-{step:06d}"


# ----------------------------------------------------------------------------------------------- saving


def save_checkpoint(
    run_dir: str | os.PathLike,
    *,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    data_state: dict,
    extra: dict | None = None,
    keep_last: int | None = None,
    is_main_process: bool = True,
) -> Path:
    """Write ``run_dir/checkpoint-{step:06d}/`` atomically and return its path.

    ``model`` must be unwrapped (no DDP/FSDP wrapper). ``data_state`` and ``extra`` must be JSON-serializable
    (they land in the manifest). A checkpoint already at this step is replaced. ``keep_last`` rotates old
    checkpoints (see the module docstring). On non-main processes nothing is written and the path that the
    main process writes is returned.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if keep_last is not None and keep_last < 1:
        raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
    run_dir = Path(run_dir)
    final = checkpoint_dir(run_dir, step)
    if not is_main_process:
        return final
    extra = dict(extra or {})
    manifest_state = {
        "data_state": _json_checked(data_state, "data_state"),
        "extra": _json_checked(extra, "extra"),
    }

    run_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(run_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{step:06d}-", dir=run_dir))
    try:
        files: dict[str, int] = {}
        if _is_peft(model):
            for name in _save_adapter(model, tmp):
                files[name] = _fsync(tmp / name)
        else:
            _save_weights(model, tmp / _WEIGHTS)
            files[_WEIGHTS] = _fsync(tmp / _WEIGHTS)
            for name in _save_model_config(model, tmp):
                files[name] = _fsync(tmp / name)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / _OPTIMIZER)
            files[_OPTIMIZER] = _fsync(tmp / _OPTIMIZER)
        if scheduler is not None:
            _save_scheduler(scheduler, tmp / _SCHEDULER)
            files[_SCHEDULER] = _fsync(tmp / _SCHEDULER)
        torch.save(_rng_state(), tmp / _RNG)
        files[_RNG] = _fsync(tmp / _RNG)

        manifest = {
            "format_version": FORMAT_VERSION,
            "step": int(step),
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "files": files,
            **manifest_state,
        }
        with open(tmp / MANIFEST_NAME, "w") as f:
            json.dump(manifest, f, indent=2, sort_keys=True)
            f.write("\n")
        _fsync(tmp / MANIFEST_NAME)
        _fsync_dir(tmp)

        if final.exists():
            # os.replace cannot overwrite a non-empty folder: move the old one aside first. A kill in
            # between leaves no folder at this step, never a mixed one; the older checkpoints remain.
            trash = run_dir / f"{_TRASH_PREFIX}{step:06d}-{os.getpid()}-{time.monotonic_ns()}"
            os.replace(final, trash)
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(run_dir)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if is_disk_full(e):
            raise DiskFullError(
                f"{final}: no space left on device while saving it (the partial copy was removed; older "
                f"checkpoints are intact): {e}"
            ) from e
        raise

    if keep_last is not None:
        _rotate(run_dir, keep_last)
    return final


def _json_checked(value: dict, what: str) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be a dict, got {type(value).__name__}")
    try:
        # Round-trip so that what loads is exactly what was saved (tuples become lists here, not later).
        return json.loads(json.dumps(value, allow_nan=True))
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"{what} must be JSON-serializable (numbers, strings, lists, dicts); convert tensors with "
            f".tolist() or .item(): {e}"
        ) from e


def _save_weights(model: torch.nn.Module, path: Path) -> None:
    if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        warnings.warn(
            "save_checkpoint got a wrapped model (it has .module); pass accelerator.unwrap_model(model) "
            "so the weight names match the bare model",
            stacklevel=3,
        )
    # save_model stores shared (tied) tensors once and load_model re-ties them.
    save_model(model, str(path), metadata={"format": "pt"})


def _is_peft(model: Any) -> bool:
    from conspo.trainer.lora import is_peft_model

    return is_peft_model(model)


def _save_adapter(model: Any, folder: Path) -> list[str]:
    """A peft model's adapter tensors (safetensors) and its adapter_config.json; the frozen base is not saved."""
    from safetensors.torch import save_file

    from conspo.trainer.lora import adapter_state_dict

    save_file(adapter_state_dict(model), str(folder / _ADAPTER), metadata={"format": "pt"})
    model.peft_config[model.active_adapter].save_pretrained(folder)
    return [_ADAPTER, "adapter_config.json"]


def _save_model_config(model: torch.nn.Module, folder: Path) -> list[str]:
    """Write config.json (and generation_config.json) so the folder also loads with from_pretrained."""
    written = []
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "save_pretrained"):
        config.save_pretrained(folder)
        written.append("config.json")
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None and hasattr(generation_config, "save_pretrained"):
        try:
            generation_config.save_pretrained(folder)
            written.append("generation_config.json")
        except ValueError as e:  # an invalid generation config must not cost the checkpoint
            logger.warning("generation config not saved in checkpoint: %s", e)
    return [name for name in written if (folder / name).exists()]


def _save_scheduler(scheduler: Any, path: Path) -> None:
    # A LambdaLR stores the __dict__ of callable-object lambdas; refuse at save time what could not be
    # loaded later without unpickling, rather than fail on resume.
    try:
        torch.save(scheduler.state_dict(), path)
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path.name}: the scheduler state holds objects that torch.load(weights_only=True) refuses "
            f"(use a scheduler whose lambdas are functions or functools.partial): {e}"
        ) from e


def _rng_state() -> dict:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": _to_lists(random.getstate()),
        "numpy": {
            "bit_generator": str(np_state[0]),
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch_cpu": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_lists(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_to_lists(v) for v in value]
    return value


def _fsync(path: Path) -> int:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())
    return path.stat().st_size


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms cannot open folders; the rename is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_stale_temporaries(run_dir: Path) -> None:
    # Only the main process writes, one save at a time, so any leftover is from a killed save.
    for child in run_dir.iterdir():
        if child.is_dir() and child.name.startswith((_TMP_PREFIX, _TRASH_PREFIX)):
            shutil.rmtree(child, ignore_errors=True)


def _rotate(run_dir: Path, keep_last: int) -> None:
    valid = list_checkpoints(run_dir)  # oldest first, complete ones only
    if len(valid) <= keep_last:
        return
    keep = {path for _, path in valid[-keep_last:]}
    best = [path for _, path in valid if _read_manifest(path).get("extra", {}).get(BEST_KEY)]
    if best:
        keep.add(best[-1])
    for _, path in valid:
        if path not in keep:
            # Rename before deleting so that a kill mid-delete never leaves a half folder with a manifest.
            trash = run_dir / f"{_TRASH_PREFIX}{path.name}-{time.monotonic_ns()}"
            os.replace(path, trash)
            shutil.rmtree(trash, ignore_errors=True)


# ------------------------------------------------------------------------------------------ discovery


def _read_manifest(path: Path) -> dict:
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise CheckpointError(f"{manifest_path}: manifest missing (the save did not finish)")
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{manifest_path}: unreadable manifest: {e}") from e
    if (
        not isinstance(manifest, dict)
        or not isinstance(manifest.get("files"), dict)
        or "step" not in manifest
    ):
        raise CheckpointError(f"{manifest_path}: manifest lacks 'step' or 'files'")
    return manifest


def _validate(path: Path) -> dict:
    """The manifest of a complete checkpoint; raises CheckpointError naming the first bad file."""
    manifest = _read_manifest(path)
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path / MANIFEST_NAME}: format_version {manifest['format_version']} is newer than this "
            f"conspo understands ({FORMAT_VERSION})"
        )
    for name, size in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{file}: listed in the manifest but missing")
        if file.stat().st_size != size:
            raise CheckpointError(
                f"{file}: size {file.stat().st_size} bytes, the manifest says {size} (truncated?)"
            )
    if _WEIGHTS not in manifest["files"] and _ADAPTER not in manifest["files"]:
        raise CheckpointError(f"{path / MANIFEST_NAME}: lists no {_WEIGHTS}")
    return manifest


def list_checkpoints(run_dir: str | os.PathLike, *, warn: bool = False) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``run_dir`` as ``(step, path)``, oldest first; incomplete ones are skipped."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for child in run_dir.iterdir():
        match = _NAME_RE.match(child.name)
        if not match or not child.is_dir():
            continue
        try:
            manifest = _validate(child)
        except CheckpointError as e:
            if warn:
                warnings.warn(f"skipping incomplete or corrupt checkpoint: {e}", stacklevel=3)
            continue
        if int(manifest["step"]) != int(match.group(1)):
            if warn:
                warnings.warn(f"skipping {child}: its manifest says step {manifest['step']}", stacklevel=3)
            continue
        found.append((int(manifest["step"]), child))
    return sorted(found)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``run_dir``, or None; partial or corrupt ones are skipped with a warning."""
    found = list_checkpoints(run_dir, warn=True)
    return found[-1][1] if found else None


# ------------------------------------------------------------------------------------------- loading


def load_checkpoint(
    path: str | os.PathLike,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
) -> CheckpointState:
    """Load a checkpoint folder into ``model`` (and ``optimizer``, ``scheduler``, the RNGs) and return its state.

    ``model`` must be the unwrapped model, built with the same architecture; its device is kept. Raises
    `CheckpointError` naming the file when one is missing, corrupt, or does not match.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such checkpoint folder")
    if not (path / MANIFEST_NAME).exists() and any(_NAME_RE.match(c.name) for c in path.iterdir()):
        raise CheckpointError(
            f"{path} is a run folder, not a checkpoint; pass latest_checkpoint({str(path)!r})"
        )
    manifest = _validate(path)

    if _is_peft(model) or _ADAPTER in manifest["files"]:
        _load_adapter(path, model, manifest)
    else:
        _load_weights(path, model)
    return _load_rest(path, manifest, optimizer, scheduler, restore_rng)


def _load_adapter(path: Path, model: Any, manifest: dict) -> None:
    """A LoRA checkpoint into a peft model built with the same model.lora settings (CheckpointError otherwise)."""
    from safetensors.torch import load_file

    file = path / _ADAPTER
    if _ADAPTER not in manifest["files"]:
        raise CheckpointError(
            f"{path}: holds full weights ({_WEIGHTS}), not a LoRA adapter; the run now has model.lora.r > 0 - "
            "resume it with the settings it was started with"
        )
    if not _is_peft(model):
        raise CheckpointError(
            f"{file}: this checkpoint holds a LoRA adapter, the model has none; resume with the model.lora "
            "settings the run was started with"
        )
    from conspo.trainer.lora import load_adapter_state_dict

    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        state = load_file(str(file), device=str(device))
    except Exception as e:
        raise CheckpointError(f"{file}: cannot load the adapter: {e}") from e
    try:
        load_adapter_state_dict(model, state, str(file))
    except ValueError as e:
        raise CheckpointError(str(e)) from e


def _load_weights(path: Path, model: torch.nn.Module) -> None:
    weights = path / _WEIGHTS
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        missing, unexpected = load_model(model, weights, strict=False, device=str(device))
    except Exception as e:
        raise CheckpointError(f"{weights}: cannot load weights: {e}") from e
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: does not match the model (missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
        )


def _load_rest(
    path: Path, manifest: dict, optimizer: Any, scheduler: Any, restore_rng: bool
) -> CheckpointState:
    if optimizer is not None:
        optimizer.load_state_dict(_torch_load(path, _OPTIMIZER, manifest))
    if scheduler is not None:
        scheduler.load_state_dict(_torch_load(path, _SCHEDULER, manifest))
    if restore_rng:
        _restore_rng(_torch_load(path, _RNG, manifest), path / _RNG)
    return CheckpointState(
        step=int(manifest["step"]),
        data_state=manifest.get("data_state", {}),
        extra=manifest.get("extra", {}),
        path=path,
    )


def _torch_load(path: Path, name: str, manifest: dict) -> Any:
    file = path / name
    if name not in manifest["files"]:
        raise CheckpointError(f"{file}: this checkpoint was saved without it")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{file}: corrupt or not loadable with weights_only=True: {e}") from e


def _restore_rng(state: dict, file: Path) -> None:
    try:
        python = state["python"]
        random.setstate((python[0], tuple(python[1]), python[2]))
        np_state = state["numpy"]
        np.random.set_state(
            (
                np_state["bit_generator"],
                np_state["keys"].numpy().astype(np.uint32),
                np_state["pos"],
                np_state["has_gauss"],
                np_state["cached_gaussian"],
            )
        )
        torch.set_rng_state(state["torch_cpu"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file}: bad RNG state: {e}") from e
    cuda_states = state.get("torch_cuda")
    if cuda_states and torch.cuda.is_available():
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            warnings.warn(
                f"{file}: saved with {len(cuda_states)} CUDA devices, {torch.cuda.device_count()} now; "
                "CUDA RNG states not restored",
                stacklevel=3,
            )
