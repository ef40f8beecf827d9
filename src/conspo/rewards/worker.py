"""Verifier worker processes: a pre-warmed "zygote" interpreter that forks one worker per request.

:class:`~conspo.rewards.MathVerifier` starts ``python -m conspo.rewards.worker <control_fd>
<parent_pid>``: a fresh interpreter (spawn semantics: it never re-imports the trainer's
``__main__``, holds no torch/CUDA state, and can be started from any thread or a daemonic process).
It imports math-verify once, warms it up, and then forks a worker whenever the verifier asks, so a
worker killed at the timeout is replaced in milliseconds instead of a fresh interpreter's seconds.
The zygote is single-threaded, which keeps ``fork`` safe.

Control socket (AF_UNIX stream): the parent sends ``b"F"`` with two file descriptors attached
(task pipe read end, result pipe write end); the zygote forks and answers the worker's pid as 4
bytes. Closing the socket stops the zygote. Worker pipes carry pickled objects with
:class:`multiprocessing.connection.Connection` framing: each request ``(kind, args)`` gets
``("ok", result)`` or ``("err", message)``; the worker first sends ``("ready", pid)``.
No process outlives its parent, even one stuck in C code that holds the GIL (a big-integer power
never lets a watchdog thread run): on Linux each worker asks the kernel for SIGKILL when the zygote
exits (``PR_SET_PDEATHSIG``), and so does the zygote for the trainer when it was started from the
trainer's main thread; the zygote also polls its parent twice a second and SIGKILLs the workers it
forked on its way out (every OS), and each check runs under an ``RLIMIT_CPU`` backstop above what
it can use within the wall-clock timeout.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import json
import math
import os
import select
import signal
import socket
import struct
import sys
import threading
import time
from multiprocessing.connection import Connection

__all__ = ["load_callable", "main"]


def load_callable(path: str):
    """Import ``"package.module:function"`` (or ``"package.module.function"``) and return the callable."""
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"custom verifier path must be 'package.module:function', got {path!r}")
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ValueError(f"custom verifier path must be 'package.module:function', got {path!r}")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"custom verifier {path!r}: cannot import module {module_name!r} ({err})") from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"custom verifier {path!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"custom verifier {path!r} is not callable")
    return obj


def _watch_parent(parent_pid: int) -> None:
    # A check stuck in C code would never see the pipe close: exit when the parent is gone.
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os._exit(0)


_PR_SET_PDEATHSIG = 1
_CPU_LIMIT_SLACK_S = 2  # seconds of CPU a check may use beyond its wall-clock timeout


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent thread exits (Linux only).

    Works even while this process is stuck in C code: nothing here has to run. False where
    unsupported (then the zygote's own kill on exit and the CPU limit remain).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        # The interpreter's own symbols include libc's: no library search (a subprocess) in a fresh worker.
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _limit_cpu(timeout: float | None) -> None:
    """A CPU-seconds ceiling for the next check: the kernel stops a runaway check with SIGXCPU.

    Set a little above what a check can use within the wall-clock timeout (timeout x the cores this
    process may run on: a custom verifier may use threads), so it only fires when the parent failed to
    kill the worker at the deadline (e.g. the parent is stopped).
    """
    if not timeout:
        return
    try:
        import resource

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + timeout * max(1, cores)) + _CPU_LIMIT_SLACK_S
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        if hard == resource.RLIM_INFINITY or soft <= hard:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ImportError, ValueError, OSError):
        pass  # not POSIX, or a lower hard limit already set: the wall-clock kill remains


def _limit_memory(megabytes: int | None) -> None:
    if not megabytes:
        return
    try:
        import resource

        limit = megabytes * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass  # not Linux, or a lower hard limit already set: run without one


def _handle(kind: str, args: tuple, custom: dict):
    from conspo.rewards import equivalence
    from conspo.rewards.verdict import Verdict

    if kind == "check":
        gold, pred, rel_tol = args
        verdict = equivalence.check_equivalence(gold, pred, rel_tol=rel_tol)
        return verdict.correct, verdict.reason.value
    if kind == "equiv":
        a, b, rel_tol = args
        return equivalence.symbolic_equivalence(a, b, rel_tol=rel_tol, symmetric=True)
    if kind == "custom":
        path, completion, answer = args
        if path not in custom:
            custom[path] = load_callable(path)
        result = custom[path](completion, answer)
        if isinstance(result, Verdict):
            return result
        if isinstance(result, (bool, int, float)):
            return float(result)
        raise TypeError(
            f"custom verifier {path!r} returned {type(result).__name__}; expected float, bool or Verdict"
        )
    raise ValueError(f"unknown request kind {kind!r}")


def _serve(tasks: Connection, results: Connection, timeout: float | None = None) -> int:
    """A worker's loop: answer requests until the pipe closes."""
    results.send(("ready", os.getpid()))
    custom: dict = {}
    while True:
        try:
            request = tasks.recv()
        except (EOFError, OSError):
            return 0
        if request is None:
            return 0
        kind, args = request
        _limit_cpu(timeout)
        try:
            reply = ("ok", _handle(kind, args, custom))
        except MemoryError:
            reply = ("err", "MemoryError (worker memory limit)")
        except Exception as err:  # any failure of one check is that item's verdict, not the worker's end
            reply = ("err", f"{type(err).__name__}: {err}"[:2000])
        try:
            results.send(reply)
        except (BrokenPipeError, OSError):
            return 0
        except Exception as err:  # an unpicklable result from a custom verifier
            results.send(("err", f"result could not be sent back: {type(err).__name__}: {err}"[:2000]))


def _fork_worker(control: socket.socket, fds: list[int], zygote_pid: int, timeout: float | None) -> int:
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            control.close()
            set_parent_death_signal()
            if os.getppid() != zygote_pid:  # the zygote died before the request above took effect
                os._exit(0)
            threading.Thread(target=_watch_parent, args=(zygote_pid,), daemon=True).start()
            code = _serve(Connection(fds[0], writable=False), Connection(fds[1], readable=False), timeout)
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    control.sendall(struct.pack("!i", pid))
    return pid


def _reap(children: set[int]) -> None:
    """Collect exited workers (so their pids are ours until reaped, and never a stranger's)."""
    while children:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)


def _kill_children(children: set[int]) -> None:
    # Unreaped, so none of these pids can belong to another process yet.
    for pid in children:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    """The zygote: warm up, then fork a worker per request until the control socket closes."""
    argv = sys.argv[1:] if argv is None else argv
    control_fd, parent_pid = int(argv[0]), int(argv[1])
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    init = json.loads(os.environ.get("CONSPO_VERIFIER_INIT", "{}"))
    # Only when the parent's main thread started us: the kernel signals on the exit of the parent
    # *thread*, and a verifier started from a short-lived thread must not lose its zygote with it.
    if init.get("parent_death_signal"):
        set_parent_death_signal()
    if os.getppid() != parent_pid:
        return 0
    for entry in reversed(init.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    _limit_memory(init.get("memory_limit_mb"))
    from conspo.rewards import equivalence

    equivalence._math_verify()  # every forked worker inherits the imports and warm caches
    equivalence.symbolic_equivalence("\\frac{1}{2}", "0.5")
    # An equation's first check imports and builds what the warm-up above does not: 0.5 s in every fresh
    # worker otherwise, e.g. each replacement after a timeout (benchmarks/verifier.py --timeouts).
    equivalence.symbolic_equivalence("y=2x+1", "2x+1=y")
    if init.get("custom_verifier"):
        with contextlib.suppress(Exception):  # reported per item by the worker that needs it
            load_callable(init["custom_verifier"])
    control = socket.socket(fileno=control_fd)
    control.sendall(b"R")
    zygote_pid, timeout = os.getpid(), init.get("timeout")
    children: set[int] = set()
    try:
        while True:
            _reap(children)
            if os.getppid() != parent_pid:
                return 0
            readable, _, _ = select.select([control], [], [], 0.5)
            if not readable:
                continue
            try:
                msg, fds, _, _ = socket.recv_fds(control, 1, 2)
            except OSError:
                return 0
            if not msg:
                return 0
            children.add(_fork_worker(control, fds, zygote_pid, timeout))
    finally:
        _kill_children(children)


if __name__ == "__main__":
    sys.exit(main())
