"""Verifier throughput: ``MathVerifier`` against calling math-verify directly in one process.

    .venv/bin/python benchmarks/verifier.py [--n 2000] [--workers 2] [--batch 512] [--data-dir ../shared/data]
    .venv/bin/python benchmarks/verifier.py --timeouts   # what a hung check costs beyond its timeout

Builds ``--n`` realistic responses from the gold answers in ``../shared/data`` (a reasoning text from
the reference solution or the problem, ending in a boxed answer; half correct, some of those in an
equivalent rewritten form; half near misses), then measures, side by side in one run:

- conspo: ``MathVerifier.verify_batch`` in batches of ``--batch`` (a training step's rollouts);
  throughput over the whole set, and per-item latency from ``verify()`` on a sample;
- direct: ``math_verify.verify(parse(gold), parse(response))`` item by item in this process, with
  its own signal-based timeouts (main thread only), the way a simple reward function calls it.

Prints verdicts per second, p50/p99 latency, agreement with the construction labels, the accuracy
of both on the labelled cases of ``tests/test_rewards_cases.py``, a per-format agreement table for both
on the labelled pairs of ``tests/test_rewards_formats.py`` (every answer format: boxed, Minerva's
sentence, "the answer is", ``**Answer:**``, ``####``, letters, currency, percent, degrees, units,
``\\pm``, scientific notation, exact numbers), and the time to extract the answer of a 1 MB response
(target: < 50 ms).

    .venv/bin/python benchmarks/verifier.py --formats-only   # the format table and the 1 MB timing
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import re
import statistics
import time
from pathlib import Path

from conspo.rewards import MathVerifier, extract_answer, extract_boxed, fast_equivalence

REPO = Path(__file__).resolve().parents[1]
SOURCES = [
    "math500",
    "olympiadbench",
    "minerva_math",
    "aime24",
    "aime25",
    "amc23",
    "hmmt_feb25",
    "gsm8k_test",
]


def load_rows(data_dir: Path) -> list[dict]:
    rows = []
    for name in SOURCES:
        with open(data_dir / f"{name}.jsonl", encoding="utf-8") as handle:
            batch = [json.loads(line) for line in handle]
        rows += batch[:400] if name == "gsm8k_test" else batch
    return rows


def reasoning(row: dict) -> str:
    """The reference solution without its final answer marker, else the problem restated."""
    text = (
        row.get("solution") or f"We need to solve: {row['problem']}\nLet us set up the equations carefully."
    )
    text = re.sub(r"\n####.*", "", text)
    text = re.sub(r"<<[^>]*>>", "", text)
    while "\\boxed" in text:  # keep the content of the solution's own box: a model's last box is what counts
        inner = extract_boxed(text)
        start = text.rfind("\\boxed")
        end = text.find(inner, start) + len(inner) + 1 if inner is not None else start + len("\\boxed")
        text = text[:start] + (inner or "") + text[end:]
    return text[:1500]


def rewrite(gold: str, rng: random.Random) -> str:
    """An equivalent form of ``gold`` a model might write (or ``gold`` itself)."""
    if re.fullmatch(r"-?\d+", gold):
        n = int(gold)
        return rng.choice([f"{n:,}" if abs(n) >= 1000 else gold, gold + ".0", gold])
    if "\\frac" in gold:
        return gold.replace("\\frac", "\\dfrac")
    return gold


def near_miss(gold: str, rng: random.Random) -> str:
    """A wrong answer close to ``gold``: off by one, wrong sign, ten times off, or one digit changed."""
    if re.fullmatch(r"-?\d+(\.\d+)?", gold):
        value = float(gold) if "." in gold else int(gold)
        return str(rng.choice([value + 1, -value if value else 1, value * 10]))
    digits = [i for i, ch in enumerate(gold) if ch.isdigit()]
    if digits:
        i = rng.choice(digits)
        return gold[:i] + str((int(gold[i]) + 1) % 10) + gold[i + 1 :]
    return gold + "+1"


def build(rows: list[dict], n: int, seed: int) -> tuple[list[str], list[str], list[bool]]:
    rng = random.Random(seed)
    picks = rng.sample(rows, n) if n <= len(rows) else [rng.choice(rows) for _ in range(n)]
    completions, answers, labels = [], [], []
    for k, row in enumerate(picks):
        correct = k % 2 == 0
        answer = rewrite(row["answer"], rng) if correct else near_miss(row["answer"], rng)
        completions.append(f"{reasoning(row)}\n\nTherefore, the final answer is $\\boxed{{{answer}}}$.")
        answers.append(row["answer"])
        labels.append(correct)
    return completions, answers, labels


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_conspo(
    completions, answers, workers: int, batch: int, timeout: float, latency_sample: int, seed: int
):
    with MathVerifier(num_workers=workers, timeout=timeout) as verifier:
        start = time.perf_counter()
        verifier.start()
        cold = time.perf_counter() - start
        start = time.perf_counter()
        verdicts = []
        for i in range(0, len(completions), batch):
            verdicts += verifier.verify_batch(completions[i : i + batch], answers[i : i + batch])
        elapsed = time.perf_counter() - start
        idx = random.Random(seed + 1).sample(range(len(completions)), min(latency_sample, len(completions)))
        latencies = []
        for i in idx:
            t = time.perf_counter()
            verifier.verify(completions[i], answers[i])
            latencies.append(time.perf_counter() - t)
        stats = verifier.stats
    return verdicts, elapsed, latencies, cold, stats


def run_direct(completions, answers, timeout: int):
    from math_verify import parse, verify

    verdicts, latencies = [], []
    start = time.perf_counter()
    for completion, answer in zip(completions, answers):
        t = time.perf_counter()
        gold = parse("\\boxed{" + answer + "}", parsing_timeout=timeout)
        pred = parse(completion, parsing_timeout=timeout)
        verdicts.append(bool(verify(gold, pred, timeout_seconds=timeout)))
        latencies.append(time.perf_counter() - t)
    return verdicts, time.perf_counter() - start, latencies


def labelled_cases(data_dir: Path):
    spec = importlib.util.spec_from_file_location("rewards_cases", REPO / "tests" / "test_rewards_cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    golds = {}
    for name in {c[0] for c in module.CASES}:
        with open(data_dir / f"{name}.jsonl", encoding="utf-8") as handle:
            for line in handle:
                row = json.loads(line)
                golds[(name, row["id"])] = row["answer"]
    completions = [c[2] for c in module.CASES]
    answers = [golds[(c[0], c[1])] for c in module.CASES]
    labels = [c[3] is True for c in module.CASES]
    return completions, answers, labels


def format_cases(data_dir: Path):
    """The labelled pairs of tests/test_rewards_formats.py: (format, gold, response, expected)."""
    spec = importlib.util.spec_from_file_location(
        "rewards_formats", REPO / "tests" / "test_rewards_formats.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module.build_cases(data_dir)


def format_table(data_dir: Path, workers: int, timeout: float) -> None:
    """Agreement with the labels per answer format: conspo vs math-verify called directly."""
    cases = format_cases(data_dir)
    completions, answers, labels = [c[2] for c in cases], [c[1] for c in cases], [c[3] for c in cases]
    with MathVerifier(num_workers=workers, timeout=timeout) as verifier:
        ours = [v.correct for v in verifier.verify_batch(completions, answers)]
    direct, _, _ = run_direct(completions, answers, int(timeout))
    rows: dict[str, list[int]] = {}
    for (fmt, *_), label, o, d in zip(cases, labels, ours, direct):
        row = rows.setdefault(fmt, [0, 0, 0])
        row[0] += 1
        row[1] += o == label
        row[2] += d == label
    print(f"\nper-format agreement with the labels ({len(cases)} pairs of tests/test_rewards_formats.py)")
    print("| format | pairs | conspo | math-verify direct |")
    print("|---|---|---|---|")
    for fmt, (n, o, d) in rows.items():
        print(f"| {fmt} | {n} | {o}/{n} ({o / n:.0%}) | {d}/{n} ({d / n:.0%}) |")
    n, o, d = (sum(r[i] for r in rows.values()) for i in range(3))
    print(f"| **all** | {n} | {o}/{n} ({o / n:.1%}) | {d}/{n} ({d / n:.1%}) |")


def extraction_timing(repeats: int = 20) -> None:
    """Time to extract the answer of a 1 MB response (median of ``repeats``), per answer format."""
    body = "We consider the cases one by one and check each. " * 21_000
    endings = {
        "boxed": "so \\boxed{\\frac{1}{2}}.",
        "Minerva sentence": "Final Answer: The final answer is $12$. I hope it is correct.",
        "the answer is": "The answer is $\\$12.00$.",
        "**Final Answer** + display": "**Final Answer**\n\\[\n\\frac{1}{2}\n\\]",
        "####": "#### 1,234",
        "no anchor (last number)": "so we get 17 in the end",
    }
    print(f"\nextraction of a 1 MB response ({len(body) / 1e6:.2f} MB), median of {repeats}; target < 50 ms")
    print("| ending | ms |")
    print("|---|---|")
    for name, ending in endings.items():
        text = body + ending
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            extract_answer(text)
            times.append(time.perf_counter() - start)
        print(f"| {name} | {1000 * statistics.median(times):.2f} |")


def timeout_cost(workers: int, timeout: float, repeats: int = 5) -> None:
    """What a hung check costs beyond its timeout: the kill, the replacement worker, the next verdict.

    The tests only tell "the timeout fired" from "it hung" (with a minute of margin for a loaded machine);
    this measures the latency itself. A GIL-holding power tower is the hang.
    """
    print(f"\na check that hangs (9^(9^(9^9))), timeout {timeout:.1f}s, {workers} workers, {repeats} times")
    print("| | median | max |")
    print("|---|---|---|")
    over, nxt = [], []
    with MathVerifier(num_workers=workers, timeout=timeout) as verifier:
        verifier.start()
        verifier.verify("\\boxed{y=2x+1}", "2x+1=y")  # warm
        for _ in range(repeats):
            start = time.perf_counter()
            verdict = verifier.verify("\\boxed{9^{9^{9^{9}}}}", "1")
            over.append(time.perf_counter() - start - timeout)
            assert verdict.reason == "timeout", verdict
            start = time.perf_counter()
            verifier.verify("\\boxed{y=2x+1}", "2x+1=y")  # needs a worker: the replacement
            nxt.append(time.perf_counter() - start)
    for name, values in (("verdict after the timeout (s)", over), ("next check on the new worker (s)", nxt)):
        print(f"| {name} | {statistics.median(values):.3f} | {max(values):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="responses to verify")
    parser.add_argument("--workers", type=int, default=2, help="MathVerifier worker processes")
    parser.add_argument("--batch", type=int, default=512, help="verify_batch size (one training step)")
    parser.add_argument("--timeout", type=float, default=5.0, help="hard per-item timeout (s)")
    parser.add_argument("--latency-sample", type=int, default=300, help="items timed one by one for p50/p99")
    parser.add_argument("--seed", type=int, default=0)
    default_dir = Path(os.environ.get("CONSPO_DATA_DIR", REPO.parent / "shared" / "data"))
    parser.add_argument("--data-dir", type=Path, default=default_dir)
    parser.add_argument(
        "--formats-only", action="store_true", help="only the per-format table and the 1 MB extraction timing"
    )
    parser.add_argument(
        "--timeouts",
        action="store_true",
        help="only the cost of a hung check (kill, replacement, next verdict)",
    )
    args = parser.parse_args()
    if args.timeouts:
        timeout_cost(args.workers, min(args.timeout, 1.0))
        return
    if args.formats_only:
        format_table(args.data_dir, args.workers, args.timeout)
        extraction_timing()
        return

    completions, answers, labels = build(load_rows(args.data_dir), args.n, args.seed)
    ours, ours_s, ours_lat, cold, stats = run_conspo(
        completions, answers, args.workers, args.batch, args.timeout, args.latency_sample, args.seed
    )
    direct, direct_s, direct_lat = run_direct(completions, answers, int(args.timeout))

    start = time.perf_counter()
    undecided = sum(
        (pred := extract_answer(c)) is not None and fast_equivalence(a, pred) is None
        for c, a in zip(completions, answers)
    )
    fast_s = time.perf_counter() - start

    ours_ok = [v.correct for v in ours]
    n = len(completions)
    print(
        f"{n} responses ({sum(labels)} built correct), {os.cpu_count()} CPU cores, {args.workers} workers, batch {args.batch}"
    )
    print(
        f"pool cold start: {cold:.2f}s; settled in-process: {stats.fast_path}/{stats.items}; sent to workers:"
        f" {stats.worker_checks}; timeouts {stats.timeouts}; errors {stats.errors}"
    )
    header = f"{'method':<34}{'verdicts/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'agree w/ labels':>17}"
    print(header)
    print("-" * len(header))
    for name, verdicts, seconds, lat in (
        ("conspo MathVerifier (batched)", ours_ok, ours_s, ours_lat),
        ("math-verify direct (1 process)", direct, direct_s, direct_lat),
    ):
        agree = sum(a == b for a, b in zip(verdicts, labels)) / n
        print(
            f"{name:<34}{n / seconds:>11.0f}{1000 * statistics.median(lat):>9.2f}"
            f"{1000 * percentile(lat, 0.99):>9.1f}{1000 * max(lat):>9.1f}{agree:>17.1%}"
        )
    print(
        f"{'in-process part alone':<34}{n / fast_s:>11.0f}   (extraction + fast paths; {undecided} of {n} left for workers)"
    )
    print(
        f"speed-up (verdicts/s): {direct_s / ours_s:.1f}x;  conspo and math-verify agree on "
        f"{sum(a == b for a, b in zip(ours_ok, direct)) / n:.1%} of items"
    )

    c_completions, c_answers, c_labels = labelled_cases(args.data_dir)
    with MathVerifier(num_workers=args.workers, timeout=args.timeout) as verifier:
        c_ours = [v.correct for v in verifier.verify_batch(c_completions, c_answers)]
    c_direct, _, _ = run_direct(c_completions, c_answers, int(args.timeout))
    m = len(c_labels)
    print(
        f"labelled cases ({m}): conspo {sum(a == b for a, b in zip(c_ours, c_labels))}/{m} correct, "
        f"math-verify direct {sum(a == b for a, b in zip(c_direct, c_labels))}/{m}"
    )
    format_table(args.data_dir, args.workers, args.timeout)
    extraction_timing()


if __name__ == "__main__":
    main()
