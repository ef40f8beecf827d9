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
Every process exits when its parent goes away (checked twice a second, even mid-check).
"""

from __future__ import annotations

import contextlib
import importlib
import json
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


def _serve(tasks: Connection, results: Connection) -> int:
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


def _fork_worker(control: socket.socket, fds: list[int]) -> None:
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            control.close()
            zygote_pid = os.getppid()
            threading.Thread(target=_watch_parent, args=(zygote_pid,), daemon=True).start()
            code = _serve(Connection(fds[0], writable=False), Connection(fds[1], readable=False))
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    control.sendall(struct.pack("!i", pid))


def main(argv: list[str] | None = None) -> int:
    """The zygote: warm up, then fork a worker per request until the control socket closes."""
    argv = sys.argv[1:] if argv is None else argv
    control_fd, parent_pid = int(argv[0]), int(argv[1])
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps killed workers: no zombies
    init = json.loads(os.environ.get("CONSPO_VERIFIER_INIT", "{}"))
    for entry in reversed(init.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    _limit_memory(init.get("memory_limit_mb"))
    from conspo.rewards import equivalence

    equivalence._math_verify()  # every forked worker inherits the imports and warm caches
    equivalence.symbolic_equivalence("\\frac{1}{2}", "0.5")
    if init.get("custom_verifier"):
        with contextlib.suppress(Exception):  # reported per item by the worker that needs it
            load_callable(init["custom_verifier"])
    control = socket.socket(fileno=control_fd)
    control.sendall(b"R")
    while True:
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
        _fork_worker(control, fds)


if __name__ == "__main__":
    sys.exit(main())
