"""The verifier worker: a fresh interpreter that answers check requests over a pipe.

Started by :class:`~conspo.rewards.MathVerifier` as ``python -m conspo.rewards.worker <task_fd>
<result_fd> <parent_pid>``. A fresh interpreter (spawn semantics) rather than ``multiprocessing``:
it never re-imports the trainer's ``__main__``, and works from daemonic processes and any thread.

Protocol (pickled objects, :class:`multiprocessing.connection.Connection` framing):
parent sends ``{"sys_path": [...], "memory_limit_mb": int | None}`` once; the worker answers
``("ready", pid)``; then each request ``(kind, args)`` gets ``("ok", result)`` or ``("err", message)``.
EOF closes the worker; so does its parent going away (checked twice a second, even mid-check).
"""

from __future__ import annotations

import importlib
import os
import signal
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
    if kind == "sleep":  # test hook: a check that hangs
        time.sleep(args[0])
        return None
    raise ValueError(f"unknown request kind {kind!r}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    task_fd, result_fd, parent_pid = (int(a) for a in argv[:3])
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()
    tasks = Connection(task_fd, writable=False)
    results = Connection(result_fd, readable=False)
    try:
        init = tasks.recv()
    except (EOFError, OSError):
        return 0
    for entry in reversed(init.get("sys_path", [])):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    _limit_memory(init.get("memory_limit_mb"))
    from conspo.rewards import equivalence

    equivalence._math_verify()  # pay the import before reporting ready, not inside a timed check
    equivalence.symbolic_equivalence("1", "1")
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


if __name__ == "__main__":
    sys.exit(main())
