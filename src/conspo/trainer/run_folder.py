"""One writer per run folder, and no silent reuse of a folder that already holds a run.

- :class:`RunFolderLock`: an exclusive ``fcntl.flock`` on ``run_dir/.conspo.lock`` (the holder's pid written
  inside), taken by the main process for as long as a run writes the folder. The kernel drops the lock when
  the process dies, however it dies, so a killed run never leaves a stale lock behind. A second writer fails
  at once with :class:`RunFolderBusy` naming the holder's pid.
- :func:`previous_run`: what an earlier run left in a folder (checkpoints, ``final/``, metrics, run card);
  a new run refuses such a folder unless it resumes or was told to overwrite (:func:`clear_previous_run`).
- :func:`finished_summary`: the run card's summary of a run that finished, so ``--resume`` can leave it alone.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from pathlib import Path
from typing import Any

__all__ = [
    "LOCK_NAME",
    "RunFinished",
    "RunFolderBusy",
    "RunFolderError",
    "RunFolderLock",
    "clear_previous_run",
    "finished_summary",
    "previous_run",
]

LOCK_NAME = ".conspo.lock"
"""The lock file inside a run folder (kept after the run: deleting it would let two writers lock two files)."""

# Everything a run writes into its folder (what --overwrite removes). Other files are the user's and stay.
_RUN_FILES = ("config.yaml", "metrics.jsonl", "run_card.json", "README.md", "curves.png")
_RUN_FOLDERS = ("tb", "final", "best")
_RUN_PREFIXES = ("checkpoint-", ".tmp-checkpoint-", ".trash-checkpoint-")


class RunFolderError(RuntimeError):
    """The run folder cannot be used as asked (in use, holds another run, nothing to resume); a usage error."""


class RunFolderBusy(RunFolderError):
    """Another process holds the run folder's lock."""


class RunFinished(Exception):
    """``--resume`` on a run that already finished: nothing to do (``summary`` is its run card's summary)."""

    def __init__(self, run_dir: Path, summary: dict[str, Any]) -> None:
        self.run_dir = Path(run_dir)
        self.summary = summary
        super().__init__(
            f"{run_dir} is a finished run ({summary.get('steps')} steps); nothing to resume, nothing changed"
        )


def _holder(lock_file: Path) -> str:
    try:
        text = lock_file.read_text().strip()
    except OSError:
        return "another process"
    pid = text.split()[0] if text else ""
    return f"pid {pid}" if pid.isdigit() else "another process"


def _busy(run_dir: Path) -> RunFolderBusy:
    return RunFolderBusy(
        f"run folder {run_dir} is in use by another conspo run ({_holder(run_dir / LOCK_NAME)}); wait for it "
        "to end, or pick another run_name / output_dir"
    )


class RunFolderLock:
    """Exclusive lock on a run folder, held from :meth:`acquire` to :meth:`release` (or process exit)."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunFolderLock:
        """Take the lock now or raise :class:`RunFolderBusy` (never waits)."""
        if self._fd is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _busy(self.run_dir) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    @staticmethod
    def check_free(run_dir: str | os.PathLike[str]) -> None:
        """Raise :class:`RunFolderBusy` if some process holds the lock now (creates nothing)."""
        lock_file = Path(run_dir) / LOCK_NAME
        try:
            fd = os.open(lock_file, os.O_RDONLY)
        except FileNotFoundError:
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fd, fcntl.LOCK_UN)
        except BlockingIOError:
            raise _busy(Path(run_dir)) from None
        finally:
            os.close(fd)

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # an abandoned Trainer must not keep its folder locked
        self.release()


def _artefacts(run_dir: Path) -> list[Path]:
    if not run_dir.is_dir():
        return []
    found = []
    for child in sorted(run_dir.iterdir()):
        name = child.name
        if (
            (name in _RUN_FILES and child.is_file())
            or (name in _RUN_FOLDERS and child.is_dir())
            or name.startswith(_RUN_PREFIXES)
        ):
            found.append(child)
    return found


def previous_run(run_dir: str | os.PathLike[str]) -> str | None:
    """What an earlier run left in ``run_dir`` (e.g. ``"checkpoint-000010, config.yaml, metrics.jsonl"``), or None."""
    names = [p.name + ("/" if p.is_dir() else "") for p in _artefacts(Path(run_dir))]
    names = [n for n in names if not n.startswith((".tmp-", ".trash-"))]
    if not names:
        return None
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def clear_previous_run(run_dir: str | os.PathLike[str]) -> list[str]:
    """Delete what an earlier run wrote into ``run_dir`` (checkpoints, final/, best/, tb/, metrics, run card,
    config.yaml, curves.png); other files stay. Returns the names removed."""
    removed = []
    for path in _artefacts(Path(run_dir)):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
        removed.append(path.name)
    return removed


def finished_summary(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The summary in ``run_dir/run_card.json`` (written only when a run finishes), or None."""
    card = Path(run_dir) / "run_card.json"
    try:
        summary = json.loads(card.read_text()).get("summary")
    except (OSError, ValueError, AttributeError):
        return None
    return summary if isinstance(summary, dict) else None
