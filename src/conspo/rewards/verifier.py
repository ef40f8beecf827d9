"""``MathVerifier``: a pool of worker processes that checks answers under a hard wall-clock timeout.

The cheap work (extraction, normalized-string and numeric equality) happens in the calling process;
only what needs math-verify (or a user's verifier) goes to a worker. A worker that runs past the
timeout is killed and replaced, one that dies is replaced; either way its item gets a ``timeout`` /
``error`` verdict and the batch goes on.

Why one file of about 500 lines: the pool is one state machine (the pre-warmed zygote, the workers,
dispatch, the timeout kill and replacement, shutdown) whose parts share its queues and locks; split, the one
invariant that every item gets exactly one verdict would be spread over several files.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import math
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from conspo.rewards.equivalence import DEFAULT_REL_TOL, fast_equivalence
from conspo.rewards.extraction import FALLBACKS, THINK_MODES, extract_answer
from conspo.rewards.verdict import CORRECT_REASONS, Reason, Verdict, make_verdict

__all__ = ["MathVerifier", "VerifierStats"]

logger = logging.getLogger(__name__)

_LIVE: weakref.WeakSet[MathVerifier] = weakref.WeakSet()
_START_FAILURES_BEFORE_RAISE = 3


def _close_all() -> None:
    for verifier in list(_LIVE):
        verifier.close()


atexit.register(_close_all)


def default_num_workers() -> int:
    """``min(4, CPU cores)``, at least 1 (INFERRED: beyond 4 the parent's fast path is the bottleneck)."""
    return max(1, min(4, os.cpu_count() or 1))


@dataclass
class VerifierStats:
    """Counters since the verifier started (read them for logging)."""

    items: int = 0
    """Items verified."""
    fast_path: int = 0
    """Items settled in the calling process (no worker)."""
    worker_checks: int = 0
    """Checks sent to workers (after de-duplicating identical pairs in a batch)."""
    timeouts: int = 0
    """Checks killed at the hard timeout."""
    errors: int = 0
    """Checks that raised, or whose worker died."""
    restarts: int = 0
    """Workers started to replace a killed or dead one."""
    reasons: dict[str, int] = field(default_factory=dict)
    """Verdict count per reason."""


class _Zygote:
    """The pre-warmed interpreter that forks workers (see :mod:`conspo.rewards.worker`)."""

    def __init__(self, init: dict[str, Any]) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        # The zygote must import conspo even when the trainer found it through a sys.path edit.
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
        # The kernel's parent-death signal follows the thread that forks: ask for it only from the
        # main thread, which lives as long as the process (see conspo.rewards.worker).
        init = {**init, "parent_death_signal": threading.current_thread() is threading.main_thread()}
        env["CONSPO_VERIFIER_INIT"] = json.dumps(init)
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "conspo.rewards.worker", str(theirs.fileno()), str(os.getpid())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                env=env,
                close_fds=True,
            )
        finally:
            theirs.close()
        self.control = ours
        self.ready = False
        self.started = time.monotonic()

    def poll_ready(self) -> bool:
        """True once the zygote has finished its imports (non-blocking)."""
        if not self.ready:
            readable, _, _ = select.select([self.control], [], [], 0)
            if readable:
                if self.control.recv(1) != b"R":
                    raise OSError("verifier zygote exited during start-up")
                self.ready = True
        return self.ready

    def fork(self) -> _Worker:
        """A new worker (the zygote must be ready). Raises OSError when the zygote is gone."""
        task_r, task_w = os.pipe()
        result_r, result_w = os.pipe()
        try:
            socket.send_fds(self.control, [b"F"], [task_r, result_w])
            self.control.settimeout(30.0)
            raw = b""
            while len(raw) < 4:
                chunk = self.control.recv(4 - len(raw))
                if not chunk:
                    raise OSError("verifier zygote closed its socket")
                raw += chunk
        except BaseException:
            os.close(task_w)
            os.close(result_r)
            raise
        finally:
            self.control.settimeout(None)
            os.close(task_r)
            os.close(result_w)
        return _Worker(
            struct.unpack("!i", raw)[0],
            Connection(task_w, readable=False),
            Connection(result_r, writable=False),
        )

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.control.close()
        try:
            self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _Worker:
    """One forked worker process and its two pipes."""

    def __init__(self, pid: int, tasks: Connection, results: Connection) -> None:
        self.pid = pid
        self.tasks = tasks
        self.results = results
        self.ready = False  # set when its ("ready", pid) message arrives
        self.job: tuple[int, float] | None = None  # (job index, deadline)

    def kill(self) -> None:
        # Not our child (the zygote's): the zygote reaps it. A dead worker's pid is not signalled.
        if not self.results.closed and _pid_alive(self.pid):
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        for conn in (self.tasks, self.results):
            with contextlib.suppress(OSError):
                conn.close()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


class MathVerifier:
    """Verifies math answers in a pool of worker processes, each check under a hard timeout.

    Args:
        num_workers: worker processes (default ``min(4, CPU cores)``).
        timeout: hard wall-clock seconds per check in a worker (default 5.0, INFERRED from
            math-verify's own default). The worker is killed at the limit.
        rel_tol: relative tolerance when a decimal literal is compared (exact forms compare exactly;
            see ``conspo.rewards.equivalence._numbers_equal``).
        think: how a ``<think>...</think>`` block is handled (see :func:`extract_answer`).
        fallback: extraction fallback when no boxed / "final answer" / "####" is found.
        custom_verifier: ``"package.module:function"``; when set, every item is scored by
            ``function(completion, answer) -> float | bool | Verdict`` in the workers instead.
        memory_limit_mb: address-space limit per worker (Linux), so a runaway power tower fails
            with MemoryError instead of eating the machine. None disables it.
        start_timeout: seconds the zygote (the interpreter that forks workers) may take to import
            math-verify and warm up; three failed starts in a row raise RuntimeError.

    Use it as a context manager, or call :meth:`close`; an ``atexit`` hook closes any left open.
    Safe to call from any thread (batches from different threads take turns on the pool).

    >>> with MathVerifier(num_workers=1) as verifier:  # doctest: +SKIP
    ...     verifier.verify("so the answer is \\\\boxed{\\\\frac{1}{2}}", "0.5").reason
    'numeric'
    """

    def __init__(
        self,
        num_workers: int | None = None,
        timeout: float = 5.0,
        *,
        rel_tol: float = DEFAULT_REL_TOL,
        think: str = "auto",
        fallback: str = "last_number",
        custom_verifier: str | None = None,
        memory_limit_mb: int | None = 4096,
        start_timeout: float = 60.0,
    ) -> None:
        if num_workers is None:
            num_workers = default_num_workers()
        if not isinstance(num_workers, int) or num_workers < 1:
            raise ValueError(f"MathVerifier: num_workers must be a positive int, got {num_workers!r}")
        if not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
            # NaN passes "<= 0" and would switch the hard timeout off (a hung check spins forever)
            raise ValueError(f"MathVerifier: timeout must be a finite number > 0 of seconds, got {timeout!r}")
        if not 0 <= rel_tol < 1:
            raise ValueError(f"MathVerifier: rel_tol must be in [0, 1), got {rel_tol!r}")
        if think not in THINK_MODES:
            raise ValueError(f"MathVerifier: think={think!r}; expected one of {THINK_MODES}")
        if fallback not in FALLBACKS:
            raise ValueError(f"MathVerifier: fallback={fallback!r}; expected one of {FALLBACKS}")
        if custom_verifier is not None:
            from conspo.rewards.worker import load_callable

            load_callable(custom_verifier)  # fail here, with the path in the message, not in a worker
        self.num_workers = num_workers
        self.timeout = float(timeout)
        self.rel_tol = float(rel_tol)
        self.think = think
        self.fallback = fallback
        self.custom_verifier = custom_verifier
        self.start_timeout = float(start_timeout)
        self.stats = VerifierStats()
        self._init = {
            "custom_verifier": custom_verifier,
            "sys_path": [p for p in sys.path if isinstance(p, str)],
            "memory_limit_mb": memory_limit_mb,
            "timeout": self.timeout,  # the workers' CPU-time backstop (see conspo.rewards.worker)
        }
        self._workers: list[_Worker] = []
        self._zygote: _Zygote | None = None
        self._lock = threading.Lock()
        self._closed = False
        _LIVE.add(self)

    # -- lifecycle ----------------------------------------------------------------------------------

    def __enter__(self) -> MathVerifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def close(self) -> None:
        """Stop every worker and the zygote (idempotent). A closed verifier restarts on the next call."""
        workers, self._workers = self._workers, []
        for worker in workers:
            worker.kill()
        zygote, self._zygote = self._zygote, None
        if zygote is not None:
            zygote.stop()

    @property
    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring and tests)."""
        return [w.pid for w in self._workers if _pid_alive(w.pid)]

    @property
    def pids(self) -> list[int]:
        """Every process this verifier runs: the zygote, then the workers."""
        zygote = (
            [self._zygote.proc.pid] if self._zygote is not None and self._zygote.proc.poll() is None else []
        )
        return zygote + self.worker_pids

    def start(self) -> MathVerifier:
        """Start the worker pool now (it otherwise starts on the first check that needs it)."""
        with self._lock:
            while len(self._workers) < self.num_workers:
                self._spawn()
        return self

    def _ensure_zygote(self) -> _Zygote:
        """The running, warmed-up zygote; starts one (blocking up to ``start_timeout``) if needed."""
        if self._zygote is not None and self._zygote.proc.poll() is None:
            return self._zygote
        failures = 0
        while True:
            if self._zygote is not None:
                self._zygote.stop()
            self._zygote = zygote = _Zygote(self._init)
            deadline = time.monotonic() + self.start_timeout
            try:
                while not zygote.poll_ready():
                    if zygote.proc.poll() is not None:
                        raise OSError(f"exit code {zygote.proc.returncode}")
                    if time.monotonic() > deadline:
                        raise OSError(f"not ready after {self.start_timeout:.0f}s")
                    select.select([zygote.control], [], [], 0.1)
                return zygote
            except OSError as err:
                failures += 1
                logger.warning("verifier zygote failed to start: %s", err)
                if failures >= _START_FAILURES_BEFORE_RAISE:
                    self.close()
                    raise RuntimeError(
                        f"MathVerifier: the worker process failed to start {failures} times in a row ({err}); "
                        f"command: {sys.executable} -m conspo.rewards.worker (see its stderr above)"
                    ) from err

    def _spawn(self) -> None:
        try:
            worker = self._ensure_zygote().fork()
        except OSError:  # the zygote died or hung since it last answered: start a new one, once
            old, self._zygote = self._zygote, None
            if old is not None:
                old.stop()
            worker = self._ensure_zygote().fork()
        self._workers.append(worker)

    # -- public API ---------------------------------------------------------------------------------

    def verify(self, completion: object, answer: object) -> Verdict:
        """The verdict on one response; see :meth:`verify_batch`."""
        return self.verify_batch([completion], [answer])[0]

    def verify_batch(self, completions: Sequence[object], answers: Sequence[object]) -> list[Verdict]:
        """One verdict per (completion, gold answer) pair, in order; never raises on bad items.

        A missing / empty / non-string gold gives ``invalid_gold``; a response without an answer
        ``no_answer``; a check past the timeout ``timeout``; a check that fails ``error``.
        """
        if len(completions) != len(answers):
            raise ValueError(
                f"verify_batch: {len(completions)} completions but {len(answers)} answers; pass one answer per completion"
            )
        verdicts: list[Verdict | None] = [None] * len(completions)
        jobs: dict[tuple, list[int]] = {}  # identical requests are checked once
        extracted: list[str | None] = [None] * len(completions)
        for i, (completion, answer) in enumerate(zip(completions, answers)):
            gold = _gold_text(answer)
            if self.custom_verifier is not None:
                if gold is None:
                    verdicts[i] = make_verdict(False, None, Reason.INVALID_GOLD)
                else:
                    text = completion if isinstance(completion, str) else None
                    jobs.setdefault(("custom", (self.custom_verifier, text, gold)), []).append(i)
                continue
            pred = extract_answer(completion, think=self.think, fallback=self.fallback)  # type: ignore[arg-type]
            extracted[i] = pred
            if gold is None:
                verdicts[i] = make_verdict(False, pred, Reason.INVALID_GOLD)
            elif pred is None:
                verdicts[i] = make_verdict(False, None, Reason.NO_ANSWER)
            else:
                reason = fast_equivalence(gold, pred, self.rel_tol)
                if reason is not None:
                    verdicts[i] = make_verdict(reason in CORRECT_REASONS, pred, reason)
                    self.stats.fast_path += 1
                else:
                    jobs.setdefault(("check", (gold, pred, self.rel_tol)), []).append(i)
        if jobs:
            outcomes = self._run_jobs(list(jobs))
            for (kind, _args), outcome, rows in zip(jobs, outcomes, jobs.values()):
                for i in rows:
                    verdicts[i] = _to_verdict(kind, outcome, extracted[i])
        self.stats.items += len(verdicts)
        for verdict in verdicts:
            self.stats.reasons[verdict.reason] = self.stats.reasons.get(verdict.reason, 0) + 1  # type: ignore[union-attr]
        return verdicts  # type: ignore[return-value]

    def equivalent(self, a: object, b: object) -> bool:
        """True when two extracted answers are equal (symmetric; for grouping, e.g. maj@k)."""
        return self.equivalent_pairs([(a, b)])[0]

    def equivalent_pairs(self, pairs: Sequence[tuple[object, object]]) -> list[bool]:
        """:meth:`equivalent` for many pairs at once; a timeout or error counts as not equivalent."""
        result: list[bool | None] = [None] * len(pairs)
        jobs: dict[tuple, list[int]] = {}
        for i, (a, b) in enumerate(pairs):
            a_text, b_text = _gold_text(a), _gold_text(b)
            if a_text is None or b_text is None:
                result[i] = False
                continue
            reason = fast_equivalence(a_text, b_text, self.rel_tol)
            if reason is None:
                reason = fast_equivalence(b_text, a_text, self.rel_tol)
            if reason is not None:
                result[i] = reason in CORRECT_REASONS
            else:
                key = ("equiv", tuple(sorted((a_text, b_text))) + (self.rel_tol,))
                jobs.setdefault(key, []).append(i)
        if jobs:
            for outcome, rows in zip(self._run_jobs(list(jobs)), jobs.values()):
                for i in rows:
                    result[i] = outcome[0] == "ok" and bool(outcome[1])
        return result  # type: ignore[return-value]

    # -- the pool -----------------------------------------------------------------------------------

    def _run_jobs(self, jobs: list[tuple[str, tuple]]) -> list[tuple[str, Any]]:
        """Run requests on the workers; each outcome is ("ok", value) / ("err", msg) / ("timeout", None)."""
        with self._lock:
            try:
                return self._run_jobs_locked(jobs)
            except BaseException:
                # Interrupted mid-batch (KeyboardInterrupt): busy workers hold stale checks.
                for worker in [w for w in self._workers if w.job is not None]:
                    worker.kill()
                    self._workers.remove(worker)
                raise

    def _run_jobs_locked(self, jobs: list[tuple[str, tuple]]) -> list[tuple[str, Any]]:
        outcomes: list[tuple[str, Any] | None] = [None] * len(jobs)
        pending = deque(range(len(jobs)))
        while len(self._workers) < self.num_workers:
            self._spawn()
        self.stats.worker_checks += len(jobs)
        while pending or any(w.job is not None for w in self._workers):
            for worker in list(self._workers):
                if worker.job is None and pending:
                    index = pending.popleft()
                    try:
                        worker.tasks.send(jobs[index])
                    except OSError:  # died while idle: replace it and retry the item
                        pending.appendleft(index)
                        self._replace(worker)
                        continue
                    worker.job = (index, time.monotonic() + self.timeout)
            busy = [w for w in self._workers if w.job is not None]
            wait_for = max(0.0, min(w.job[1] for w in busy) - time.monotonic())  # type: ignore[index]
            readable = wait([w.results for w in busy], timeout=wait_for)
            now = time.monotonic()
            for worker in busy:
                index, deadline = worker.job  # type: ignore[misc]
                if worker.results in readable:
                    try:
                        message = worker.results.recv()
                        while message[0] == "ready" and worker.results.poll():
                            message = worker.results.recv()
                    except (EOFError, OSError):
                        outcomes[index] = ("err", "worker process died")
                        self.stats.errors += 1
                        self._replace(worker)
                        continue
                    if message[0] == "ready":
                        continue  # its start-up note; the answer is still to come
                    worker.job = None
                    outcomes[index] = message
                    if message[0] == "err":
                        self.stats.errors += 1
                        logger.debug("verifier check failed: %s", message[1])
                elif now >= deadline:
                    outcomes[index] = ("timeout", None)
                    self.stats.timeouts += 1
                    logger.warning(
                        "verifier check ran past %.1fs; worker %d killed", self.timeout, worker.pid
                    )
                    self._replace(worker)
        return outcomes  # type: ignore[return-value]

    def _replace(self, worker: _Worker) -> None:
        worker.job = None
        worker.kill()
        self._workers.remove(worker)
        self.stats.restarts += 1
        self._spawn()


def _gold_text(answer: object) -> str | None:
    if isinstance(answer, bool):
        return None
    if isinstance(answer, (int, float)):
        answer = repr(answer) if isinstance(answer, float) else str(answer)
    if not isinstance(answer, str) or not answer.strip():
        return None
    return answer


def _to_verdict(kind: str, outcome: tuple[str, Any], extracted: str | None) -> Verdict:
    status, value = outcome
    if status == "timeout":
        return make_verdict(False, extracted, Reason.TIMEOUT)
    if status != "ok":
        return make_verdict(False, extracted, Reason.ERROR)
    if kind == "check":
        correct, reason = value
        return make_verdict(correct, extracted, Reason(reason))
    if isinstance(value, Verdict):
        return value
    reward = float(value)
    return Verdict(reward=reward, correct=reward > 0.5, extracted=extracted, reason=Reason.CUSTOM)
