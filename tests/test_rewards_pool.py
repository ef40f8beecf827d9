"""The verifier pool's reliability: hard timeouts, dead workers, bad input, threads, clean shutdown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from conspo.rewards import MathVerifier, Reason, Verdict

TIMEOUT = 1.0
# Bounds "the hard timeout fired" apart from "it hung" (the power tower runs for minutes, the injected
# hang for hours) with room for a loaded machine; how fast a timeout is answered is a benchmark's
# business (benchmarks/verifier.py), not a test's.
MARGIN = 60.0


# Custom verifiers: workers import them by path ("test_rewards_pool:<name>"; pytest puts tests/ on sys.path).
def sleep_forever(completion: str, answer: str) -> float:
    if completion == "hang":
        time.sleep(10_000)
    return 1.0 if completion == answer else 0.0


def die(completion: str, answer: str) -> float:
    if completion == "die":
        os._exit(3)
    return 1.0


def typed(completion: str, answer: str):
    return {"float": 0.25, "bool": True, "verdict": Verdict(0.5, True, "x", "custom")}.get(
        completion, "bad type"
    )


def rank_job(rank: int) -> list[bool]:
    """One "rank" of a multi-process job: its own verifier, a check that needs a worker."""
    with MathVerifier(num_workers=1, timeout=30.0) as v:
        return [x.correct for x in v.verify_batch(["\\boxed{y=2x+1}", f"\\boxed{{{rank}}}"], ["2x+1=y", "1"])]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids: list[int], seconds: float = 5.0) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if _alive(p)]


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(num_workers=2, timeout=TIMEOUT) as v:
        yield v


ADVERSARIAL = {
    "none": (None, "5"),
    "empty": ("", "5"),
    "not a string": (12345, "5"),
    "bytes": (b"\\boxed{5}", "5"),
    "1 MB response": ("lorem ipsum " * 90_000 + "\\boxed{5}", "5"),
    "1 MB of digits": ("7" * 1_000_000, "5"),
    "nested braces": ("\\boxed{" + "{" * 5000 + "5" + "}" * 5000 + "}", "5"),
    "unbalanced braces": ("\\boxed{" * 3000 + "5" + "}" * 10, "5"),
    "power tower": ("\\boxed{10^{10^{10^{10}}}}", "10"),
    "power tower gold": ("\\boxed{5}", "10^{10^{10^{10}}}"),
    "empty box": ("so \\boxed{}", "5"),
    "many boxes": ("".join(f"\\boxed{{{i}}} " for i in range(20_000)), "19999"),
    "unicode and control": ("réponse \x00\x07\u202e ∑ \U0001f600 \\boxed{５}", "5"),
    "huge integer": ("\\boxed{" + "9" * 5000 + "}", "9"),
    "huge exponent": ("\\boxed{1e999999999}", "1"),
    "gold none": ("\\boxed{5}", None),
    "gold empty": ("\\boxed{5}", "  "),
    "gold list": ("\\boxed{5}", ["5"]),
    "latex garbage": ("\\boxed{\\frac{\\frac{\\sqrt{}}{}}{\\left(}", "1"),
    "deep frac": ("\\boxed{" + "\\frac{1}{" * 300 + "2" + "}" * 300 + "}", "1"),
}


@pytest.mark.slow
def test_adversarial_inputs_each_get_a_verdict_within_the_timeout(verifier):
    for name, (completion, answer) in ADVERSARIAL.items():
        start = time.monotonic()
        verdict = verifier.verify(completion, answer)
        elapsed = time.monotonic() - start
        assert isinstance(verdict, Verdict), name
        assert elapsed < TIMEOUT + MARGIN, f"{name} took {elapsed:.1f}s"
        assert verdict.reason in set(Reason), name
        if name.startswith("gold"):
            assert verdict.reason == Reason.INVALID_GOLD, name
        if name in ("none", "empty", "not a string", "bytes", "empty box"):
            assert verdict.reason == Reason.NO_ANSWER, name
    assert verifier.verify("\\boxed{5}", "5").correct  # still serving
    assert verifier.verify("many \\boxed{1} then \\boxed{19999}", "19999").correct


def test_batch_of_adversarial_inputs_keeps_order(verifier):
    names = [n for n in ADVERSARIAL if "tower" not in n]
    verdicts = verifier.verify_batch([ADVERSARIAL[n][0] for n in names], [ADVERSARIAL[n][1] for n in names])
    assert len(verdicts) == len(names)
    got = dict(zip(names, verdicts))
    assert got["1 MB response"].correct and got["nested braces"].correct and got["many boxes"].correct
    assert got["empty box"].reason == Reason.NO_ANSWER and got["gold list"].reason == Reason.INVALID_GOLD


def test_hang_is_killed_reported_and_pool_keeps_serving():
    path = "test_rewards_pool:sleep_forever"
    with MathVerifier(num_workers=1, timeout=1.0, custom_verifier=path) as v:
        assert v.verify("ok", "ok").reason == Reason.CUSTOM
        (pid,) = v.worker_pids
        start = time.monotonic()
        verdicts = v.verify_batch(["hang", "ok", "no"], ["x", "ok", "ok"])
        assert time.monotonic() - start < 1.0 + MARGIN
        assert [(x.reason, x.correct) for x in verdicts] == [
            (Reason.TIMEOUT, False),
            (Reason.CUSTOM, True),
            (Reason.CUSTOM, False),
        ]
        assert verdicts[0].reward == 0.0
        assert _wait_gone([pid]) == []
        assert v.stats.timeouts == 1 and v.stats.restarts == 1
        assert pid not in v.worker_pids and len(v.worker_pids) == 1


def test_dead_worker_gives_error_and_is_replaced():
    with MathVerifier(num_workers=1, timeout=5.0, custom_verifier="test_rewards_pool:die") as v:
        verdicts = v.verify_batch(["die", "fine"], ["1", "1"])
        assert [x.reason for x in verdicts] == [Reason.ERROR, Reason.CUSTOM]
        assert v.stats.errors == 1 and v.stats.restarts == 1


def test_custom_verifier_result_types():
    with MathVerifier(num_workers=1, custom_verifier="test_rewards_pool:typed") as v:
        floats, bools, verdict, bad = v.verify_batch(["float", "bool", "verdict", "other"], ["a"] * 4)
    assert (floats.reward, floats.correct) == (0.25, False)
    assert (bools.reward, bools.correct) == (1.0, True)
    assert verdict == Verdict(0.5, True, "x", "custom")
    assert bad.reason == Reason.ERROR


def test_works_from_threads(verifier):
    results: dict[int, list] = {}

    def run(k: int) -> None:
        results[k] = verifier.verify_batch(
            ["\\boxed{x+1}", "\\boxed{(1,2]}", f"\\boxed{{{k}}}"], ["1+x", "(1,2]", "3"]
        )

    threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [0, 1, 2, 3]
    for k, verdicts in results.items():
        assert [v.correct for v in verdicts] == [True, True, k == 3]


@pytest.mark.slow
def test_works_inside_daemonic_multiprocess_workers():
    """multiprocessing.Pool workers are daemonic and may not have children of their own; ours may."""
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(2) as pool:
        assert pool.map(rank_job, [0, 1], chunksize=1) == [[True, False], [True, True]]


def test_equivalent_pairs_for_majority_grouping(verifier):
    pairs = [
        ("\\frac12", "0.5"),
        ("x+1", "1+x"),
        ("(1,2)", "(2,1)"),
        ("2", "3"),
        (None, "1"),
        ("\\{1,2\\}", "\\{2,1\\}"),
    ]
    assert verifier.equivalent_pairs(pairs) == [True, True, False, False, False, True]
    assert verifier.equivalent("\\sqrt{8}", "2\\sqrt2")


def test_bad_arguments_raise_with_the_name():
    with pytest.raises(ValueError, match="num_workers"):
        MathVerifier(num_workers=0)
    with pytest.raises(ValueError, match="timeout"):
        MathVerifier(timeout=-1)
    with MathVerifier(num_workers=1) as v, pytest.raises(ValueError, match="2 completions but 1 answers"):
        v.verify_batch(["a", "b"], ["1"])


_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {src!r})
    from conspo.rewards import MathVerifier
    mode = sys.argv[1]
    v = MathVerifier(num_workers=2, timeout=30.0, custom_verifier="slow_verifier:score" if mode == "hang" else None)
    v.start()
    print(" ".join(map(str, v.pids)), flush=True)  # the zygote and both workers
    if mode == "hang":  # a check in flight when the parent is killed or interrupted
        v.verify("x", "1")
    sys.exit(0)  # no close(): the atexit hook must stop the workers
    """
)


@pytest.mark.slow
def test_no_orphan_workers_after_parent_exits(tmp_path):
    """Normal exit without close() (atexit), SIGKILL, SIGINT and SIGTERM mid-batch: no worker survives."""
    script = tmp_path / "child.py"
    script.write_text(_CHILD.format(src=str(Path(__file__).resolve().parents[1] / "src")))
    (tmp_path / "slow_verifier.py").write_text(
        "import time\ndef score(completion, answer):\n    time.sleep(60)\n"
    )
    modes = {"exit": None, "sigkill": signal.SIGKILL, "sigint": signal.SIGINT, "sigterm": signal.SIGTERM}
    procs = {
        mode: subprocess.Popen(
            [sys.executable, str(script), "exit" if mode == "exit" else "hang"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for mode in modes
    }  # started together: each one pays a Python start and a pool start
    pids = {}
    for mode, proc in procs.items():
        pids[mode] = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids[mode]) == 3, proc.stderr.read()
    time.sleep(0.3)
    for mode, proc in procs.items():
        if modes[mode] is not None:
            proc.send_signal(modes[mode])
    for mode, proc in procs.items():
        proc.wait(30)
        assert _wait_gone(pids[mode], 5.0) == [], f"orphan workers after {mode}"


# The reproduction of issue 14: a check stuck in C code holding the GIL (a big-integer power), so no
# watchdog thread in the worker can run, while the parent is killed.
_TOWER = (
    "from conspo.rewards import MathVerifier; v=MathVerifier(num_workers=2).start(); "
    'v.verify("\\\\boxed{9^{9^{9^{9}}}}","1")'
)


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    ("sig", "timeout"),
    [(signal.SIGKILL, None), (signal.SIGTERM, None), (signal.SIGKILL, 600)],
    ids=["sigkill", "sigterm", "sigkill-long-timeout"],
)
def test_no_orphan_when_parent_is_killed_during_a_gil_holding_check(sig, timeout):
    """The issue's command as given, and with a 600 s timeout: there the CPU-time backstop (timeout x cores + 2 s)
    cannot be what stops the worker within the 10 s we wait, only the kill on the parent's death."""
    code = _TOWER if timeout is None else _TOWER.replace("num_workers=2", f"num_workers=2, timeout={timeout}")
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        busy: list[int] = []
        while not busy:  # wait until a worker is inside the power (on a loaded machine: as long as it takes)
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the check never started"
            time.sleep(0.2)
            zygotes = _children(proc.pid)
            workers = [w for z in zygotes for w in _children(z)]
            busy = [w for w in workers if _cpu_seconds(w) > 0.5]
        pool = zygotes + workers
        assert len(workers) == 2
        proc.send_signal(sig)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    survivors = _wait_gone(pool, 10.0)
    for pid in survivors:  # do not leave a core burning for the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert survivors == [], f"orphaned verifier processes after {sig.name}"


def test_pool_started_from_a_finished_thread_keeps_its_zygote():
    """The kernel's parent-death signal follows the forking *thread*: a verifier first used from a thread
    that has since exited must keep its zygote (asked for only from the main thread)."""
    with MathVerifier(num_workers=1, timeout=30.0) as v:
        thread = threading.Thread(target=v.start)
        thread.start()
        thread.join(120)
        zygote = v.pids[0]
        time.sleep(0.5)
        assert v.verify("\\boxed{y=2x+1}", "2x+1=y").correct  # needs a worker
        assert v.pids[0] == zygote and v.stats.restarts == 0


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_CPU semantics")
def test_cpu_limit_backstop_stops_a_runaway_check():
    """Even with nobody left to kill it, a check stuck in C code stops at timeout + a little CPU time."""
    code = "from conspo.rewards.worker import _limit_cpu; _limit_cpu(0.5); pow(9, 9**9)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGXCPU, proc.stderr.decode()
