"""The on-disk sample cache that makes an evaluation resumable.

One JSON Lines file per model. Each line is one generated sample, keyed by a hash of the model
fingerprint, the benchmark, the problem id, the exact prompt text, the sample index and the sampling
parameters, so a changed template, checkpoint or temperature never reuses a stale sample. Lines are
appended and flushed after every generation call; an interrupted run loses at most the call in
flight, and a half-written line is skipped on reload.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["SampleCache", "model_fingerprint", "sample_key", "sample_seed"]

# Files whose size and modification time identify a local checkpoint (hashing GBs of weights is too slow).
_FINGERPRINT_PATTERNS = ("*.json", "*.safetensors", "*.bin", "*.model", "*.txt", "*.jinja")


def model_fingerprint(model: str | os.PathLike[str], revision: str | None = None) -> str:
    """A short stable id of a checkpoint: a local folder's resolved path plus its files' sizes and
    mtimes, or a hub id plus revision. A checkpoint rewritten in place gets a new fingerprint."""
    path = Path(model).expanduser()
    h = hashlib.sha256()
    if path.is_dir():
        h.update(str(path.resolve()).encode())
        for pattern in _FINGERPRINT_PATTERNS:
            for file in sorted(path.glob(pattern)):
                stat = file.stat()
                h.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    else:
        h.update(f"hub:{model}@{revision or 'main'}".encode())
    return h.hexdigest()[:16]


def sample_key(
    fingerprint: str, benchmark: str, problem_id: str, prompt: str, sample_index: int, params: dict[str, Any]
) -> str:
    """The identity of one sample: a sha256 hex digest of everything that determines its distribution."""
    payload = json.dumps(
        [fingerprint, benchmark, problem_id, prompt, sample_index, params], sort_keys=True, ensure_ascii=True
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def sample_seed(
    params: dict[str, Any], benchmark: str, problem_id: str, prompt: str, sample_index: int
) -> int:
    """The sampling seed of one sample (a 63-bit int): a hash of the sampling settings (``params``, their
    ``seed`` included), the benchmark, the problem id, the exact prompt and the sample index.

    It names what the sample is, never how it was batched, so any mix of cached and fresh samples equals
    a fresh run. The model is left out on purpose: two checkpoints are sampled with the same random
    numbers (their difference is less noisy), and a copy of a model scores the same as the original.
    """
    payload = json.dumps(
        ["seed", params, benchmark, problem_id, prompt, sample_index], sort_keys=True, ensure_ascii=True
    )
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "big") >> 1


class SampleCache:
    """Generated samples of one model, appended to ``path`` as they finish.

    Args:
        path: the JSON Lines file (created with its parent folders on first write).
        fingerprint: the model's fingerprint (:func:`model_fingerprint`, or any string that changes
            whenever the weights do, e.g. ``f"{run}-step{step}"`` for the trainer's periodic eval).
    """

    def __init__(self, path: str | os.PathLike[str], fingerprint: str) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self._records: dict[str, dict[str, Any]] = {}
        self.skipped_lines = 0  # unreadable lines found on load (interrupted writes)
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        for line in self.path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                self._records[record["key"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                # A write cut short by an interruption: that sample is simply generated again.
                self.skipped_lines += 1

    def key(
        self, benchmark: str, problem_id: str, prompt: str, sample_index: int, params: dict[str, Any]
    ) -> str:
        """The cache key of one sample of this model (see :func:`sample_key`)."""
        return sample_key(self.fingerprint, benchmark, problem_id, prompt, sample_index, params)

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored record (``completion``, ``num_tokens``, ``truncated``, ...) or None."""
        return self._records.get(key)

    def put(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records (each with a ``key``) and flush them to disk."""
        records = list(records)
        if not records:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            # A previous run killed mid-line left no newline: start a fresh line so this one parses.
            if f.tell() > 0 and not self._ends_with_newline():
                f.write("\n")
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
                self._records[record["key"]] = record
            f.flush()
            os.fsync(f.fileno())

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == b"\n"

    def __len__(self) -> int:
        return len(self._records)
