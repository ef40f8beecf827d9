"""Labelled pairs for every answer format models write, built from the gold answers in ``../shared/data``.

Each pair is (format, gold, response, expected): ``expected`` is True for a correct answer written in
that format (the gold itself or an equivalent rewrite), False for a near miss written the same way
(off by one, wrong sign, a missing element, an intermediate quantity from the reference solution, the
wrong choice letter, an exponent off by one, a decimal that is not the integer). The golds are picked
from the shared data with a fixed seed, so the set is the same on every machine; about half of every
format is near misses. ``benchmarks/verifier.py`` scores the same pairs with math-verify called
directly, per format.

Pairs per format (``test_every_format_is_covered`` keeps this table true):

| format | pairs | | format | pairs |
|---|---|---|---|---|
| boxed | 40 | | choice | 38 |
| think | 30 | | currency | 36 |
| minerva | 36 | | percent | 30 |
| answer_is | 40 | | degree | 30 |
| bold | 40 | | units | 42 |
| answer_line | 32 | | pm | 30 |
| gsm8k | 36 | | sci | 36 |
| exact | 48 | | **total** | **544** |
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from conspo.rewards import MathVerifier, Reason

pytestmark = pytest.mark.slow  # one batch on a 2-worker pool, a few seconds to tens of seconds

COUNTS = {
    "boxed": 40,
    "think": 30,
    "minerva": 36,
    "answer_is": 40,
    "bold": 40,
    "answer_line": 32,
    "gsm8k": 36,
    "exact": 48,
    "choice": 38,
    "currency": 36,
    "percent": 30,
    "degree": 30,
    "units": 42,
    "pm": 30,
    "sci": 36,
}
CORRECT = {Reason.EXACT, Reason.NUMERIC, Reason.SYMBOLIC}
WORK = "Let me work through this carefully.\nAfter simplifying, every case has been checked."

Case = tuple[str, str, str, bool]  # (format, gold, response, expected)


def _load(data_dir: Path, name: str) -> list[dict]:
    with open(data_dir / f"{name}.jsonl", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def _pick(rng: random.Random, rows: list, k: int) -> list:
    return rng.sample(rows, k) if len(rows) >= k else [rng.choice(rows) for _ in range(k)]


def _int_near(gold: str, rng: random.Random, solution: str = "") -> str:
    """Off by one, wrong sign, or an intermediate quantity of the reference solution."""
    n = int(gold)
    found = {int(x) for x in re.findall(r"(?<![\d.])\d{1,7}(?![\d.])", solution)} - {n, -n}
    options = [str(n + 1), str(n - 1), str(-n) if n else "1"]
    if found:
        options.append(str(sorted(found)[rng.randrange(len(found))]))
    return rng.choice(options)


def _latex_near(gold: str, rng: random.Random) -> str:
    """One digit changed, or the sign flipped: never equal to the gold."""
    digits = [i for i, ch in enumerate(gold) if ch.isdigit()]
    if digits and rng.random() < 0.7:
        i = rng.choice(digits)
        return gold[:i] + str((int(gold[i]) + 1) % 10) + gold[i + 1 :]
    return gold[1:] if gold.startswith("-") else "-" + gold if "," not in gold else gold + ", 0"


def _bump_last_digit(number: str) -> str:
    i = max(i for i, ch in enumerate(number) if ch.isdigit())
    return number[:i] + str((int(number[i]) + 1) % 10) + number[i + 1 :]


def _rewrite(gold: str, rng: random.Random) -> str:
    """An equivalent way to write ``gold``."""
    if re.fullmatch(r"-?\d+", gold):
        n = int(gold)
        return rng.choice([gold, f"{n:,}" if abs(n) >= 1000 else gold, gold + ".0"])
    out = gold.replace("\\frac", rng.choice(["\\frac", "\\dfrac", "\\tfrac"]))
    return out.replace(",", ", ") if rng.random() < 0.5 else out


def _int_rows(data_dir: Path) -> list[tuple[str, str]]:
    rows = []
    for name in ("aime24", "aime25", "amc23", "hmmt_feb25", "math500"):
        rows += [(r["answer"], r.get("solution", "")) for r in _load(data_dir, name)]
    return [(a, s) for a, s in rows if re.fullmatch(r"-?\d+", a)]


def _latex_rows(data_dir: Path) -> list[str]:
    """MATH-500 golds that are single LaTeX values (fractions, radicals, pi), no lists or words."""
    golds = [r["answer"] for r in _load(data_dir, "math500")]
    return [
        g
        for g in golds
        if re.search(r"\\frac|\\sqrt|\\pi", g) and not re.search(r"[,=<>]|\\text|\\begin|\\in|\\cup", g)
    ]


def _pairs(fmt: str, golds: list[tuple[str, str]], wrap, rng: random.Random) -> list[Case]:
    """One correct and one near-miss response per (gold, near miss), each written by ``wrap``."""
    cases: list[Case] = []
    for gold, near in golds:
        cases.append((fmt, gold, wrap(_rewrite(gold, rng) if rng.random() < 0.5 else gold, rng), True))
        cases.append((fmt, gold, wrap(near, rng), False))
    return cases


def build_cases(data_dir: Path, seed: int = 12) -> list[Case]:
    """Every labelled pair, in a fixed order (the same on any machine)."""
    rng = random.Random(seed)
    cases: list[Case] = []
    ints = _int_rows(data_dir)
    latex = _latex_rows(data_dir)
    gsm = _load(data_dir, "gsm8k_test")
    minerva = _load(data_dir, "minerva_math")

    def mixed(k: int) -> list[tuple[str, str]]:
        out = [(g, _int_near(g, rng, s)) for g, s in _pick(rng, ints, k // 2)]
        return out + [(g, _latex_near(g, rng)) for g in _pick(rng, latex, k - k // 2)]

    # -- \boxed{} / \fbox{}: last one, nested braces, display math --
    def boxed(ans: str, r: random.Random) -> str:
        return r.choice(
            [
                f"{WORK}\nTherefore\n$$\\boxed{{{ans}}}$$",
                f"{WORK} So the result is $\\boxed{{{{{ans}}}}}$.",
                f"{WORK}\nWe get \\fbox{{{ans}}}.",
                f"First guess: \\boxed{{0.123}}. Checking again, {WORK}\n\\[\\boxed{{{ans}}}\\]",
            ]
        )

    cases += _pairs("boxed", mixed(20), boxed, rng)

    # -- R1-style: the box after </think> is the answer --
    def think(ans: str, r: random.Random) -> str:
        return r.choice(
            [
                f"<think>\nMaybe it is \\boxed{{0.123}}? No.\n{WORK}\n</think>\n\nThe answer is $\\boxed{{{ans}}}$.",
                f"<think>\nTry 0.5 first.\n</think>\n{WORK}\n**Final Answer**\n\\[\n\\boxed{{{ans}}}\n\\]",
                f"<think>\nI think the answer is 0.123.\n</think>\nSo the final answer is \\boxed{{{ans}}}.",
            ]
        )

    cases += _pairs("think", mixed(15), think, rng)

    # -- Minerva's few-shot sentence --
    def minerva_wrap(ans: str, r: random.Random) -> str:
        math = r.choice([f"${ans}$", f"${ans}$", ans if not re.search(r"\\", ans) else f"${ans}$"])
        return f"{WORK}\nFinal Answer: The final answer is {math}. I hope it is correct."

    mv_golds = [r["answer"] for r in minerva if re.fullmatch(r"-?\d+(\.\d+)?", r["answer"])]
    mv_pairs = [(g, _latex_near(g, rng)) for g in _pick(rng, mv_golds, 8)]
    cases += _pairs("minerva", mv_pairs + mixed(10), minerva_wrap, rng)

    # -- "The (final) answer is ..." --
    def answer_is(ans: str, r: random.Random) -> str:
        return r.choice(
            [
                f"{WORK} Therefore, the answer is ${ans}$.",
                f"{WORK}\nThe final answer is ${ans}$",
                f"{WORK}\nSo the answer is: \\({ans}\\)",
                f"{WORK}\nThe answer to the question is ${ans}$.",
                f"{WORK}\nHence the answer is therefore ${ans}$.",
            ]
        )

    cases += _pairs("answer_is", mixed(20), answer_is, rng)

    # -- **Answer:** / **Final Answer** with inline or display math --
    def bold(ans: str, r: random.Random) -> str:
        return r.choice(
            [
                f"{WORK}\n\n**Answer:** ${ans}$",
                f"{WORK}\n\n**Final Answer**\n\\[\n{ans}\n\\]",
                f"{WORK}\n\n**Final Answer:** $${ans}$$",
                f"{WORK}\n\n## Final Answer\n\n\\({ans}\\)",
                f"{WORK}\n\n**Final Answer**\n$$\n{ans}\n$$",
                f"{WORK}\n\n**Answer: ${ans}$**",
            ]
        )

    cases += _pairs("bold", mixed(20), bold, rng)

    # -- "Answer: ..." lines --
    def answer_line(ans: str, r: random.Random) -> str:
        plain = not re.search(r"\\", ans)
        return r.choice(
            [
                f"{WORK}\nAnswer: {ans if plain else '$' + ans + '$'}",
                f"{WORK}\nFinal answer: ${ans}$",
                f"{WORK}\nanswer: \\({ans}\\)\n",
            ]
        )

    cases += _pairs("answer_line", mixed(16), answer_line, rng)

    # -- GSM8K "#### N" (thousands separators allowed) --
    def hashes(ans: str, r: random.Random) -> str:
        return f"{WORK}\nShe ends up with {ans} in total.\n#### {ans}"

    gsm_rows = _pick(rng, gsm, 18)
    cases += _pairs(
        "gsm8k", [(r["answer"], _int_near(r["answer"], rng, r["solution"])) for r in gsm_rows], hashes, rng
    )

    # -- exact numbers: integers compare exactly; decimals to the place they are written to --
    exact: list[Case] = []
    for k, (gold, _) in enumerate(_pick(rng, ints, 9)):
        n = int(gold)
        exact.append(("exact", gold, f"The answer is $\\boxed{{{n}.00}}$", True))
        exact.append(("exact", gold, f"\\boxed{{{n}.00001}}", False))  # not 12 at the fifth place
        if k % 2:
            exact.append(("exact", gold, f"\\boxed{{{n}.0}}", True))
            exact.append(("exact", gold, f"\\boxed{{{n + 0.5}}}", False))  # 1000000.5 is not 1000000
        else:
            digits = str(abs(n))
            glued = ("-" if n < 0 else "") + digits[:1] + "\x00" + digits[1:]  # a NUL byte inside the number
            exact.append(("exact", gold, f"Answer: {n:,}", True))
            exact.append(("exact", gold, f"\\boxed{{{glued}}}", False))
    for gold in _pick(rng, mv_golds, 6):
        exact.append(("exact", gold, f"\\boxed{{{gold}0}}" if "." in gold else f"\\boxed{{{gold}.0}}", True))
        exact.append(("exact", gold, f"\\boxed{{{_latex_near(gold, rng)}}}", False))
    cases += exact

    # -- multiple-choice letters --
    letter_golds = [
        r["answer"]
        for name in ("math500", "math_train_level3to5")
        for r in _load(data_dir, name)
        if re.fullmatch(r"\(?[A-E]\)?|\\text\{\(?[A-E]\)?\}|\\textbf\{\(?[A-E]\)?\}", r["answer"])
    ]

    def choice(letter: str, r: random.Random) -> str:
        return r.choice(
            [
                f"{WORK}\nThe answer is ({letter}).",
                f"{WORK}\n**Answer:** {letter}",
                f"{WORK}\nThe correct option is **({letter})**.",
                f"{WORK}\n\\boxed{{\\text{{({letter})}}}}",
                f"{WORK}\nAnswer: ({letter}) 12",
            ]
        )

    for gold in letter_golds:
        letter = re.search(r"[A-E]", gold).group()
        wrong = "ABCDE"[("ABCDE".index(letter) + rng.randrange(1, 5)) % 5]
        cases.append(("choice", gold, choice(letter, rng), True))
        cases.append(("choice", gold, choice(wrong, rng), False))

    # -- currency --
    def currency(ans: str, r: random.Random) -> str:
        cents = ans if "." in ans else ans + ".00"
        return r.choice(
            [
                f"{WORK}\nThe answer is $\\${ans}$.",
                f"{WORK}\nThe answer is $\\${cents}$.",
                f"{WORK}\nThe answer is ${ans}.",
                f"{WORK}\nThe answer is \\${cents}.",
                f"{WORK}\n**Answer:** \\${ans}",
                f"{WORK}\n\\boxed{{\\${ans}}}",
                f"{WORK}\nThe answer is {ans} dollars.",
            ]
        )

    money = [r for r in gsm if "$" in r["problem"] and "dollar" not in r["answer"]]
    cases += _pairs(
        "currency",
        [(r["answer"], _int_near(r["answer"], rng, r["solution"])) for r in _pick(rng, money, 18)],
        currency,
        rng,
    )

    # -- percent --
    def percent(ans: str, r: random.Random) -> str:
        return r.choice(
            [
                f"{WORK}\n\\boxed{{{ans}\\%}}",
                f"{WORK}\nThe answer is {ans}%.",
                f"{WORK}\nThe answer is {ans} percent.",
                f"{WORK}\n**Answer:** ${ans}\\%$",
            ]
        )

    pct_rows = [
        r
        for name in ("math500", "math_train_level3to5", "gsm8k_test")
        for r in _load(data_dir, name)
        if re.search(r"percent|\\%|%", r["problem"]) and re.fullmatch(r"\d+", r["answer"])
    ]
    cases += _pairs(
        "percent",
        [(r["answer"], _int_near(r["answer"], rng, r.get("solution", ""))) for r in _pick(rng, pct_rows, 15)],
        percent,
        rng,
    )

    # -- degrees --
    def degree(ans: str, r: random.Random) -> str:
        return r.choice(
            [
                f"{WORK}\n\\boxed{{{ans}^\\circ}}",
                f"{WORK}\nThe answer is ${ans}^{{\\circ}}$.",
                f"{WORK}\nThe answer is {ans} degrees.",
                f"{WORK}\n**Answer:** ${ans}°$",
            ]
        )

    deg_rows = [
        r["answer"]
        for name in ("math500", "math_train_level3to5")
        for r in _load(data_dir, name)
        if ("degree" in r["problem"] or "^\\circ" in r["problem"]) and re.fullmatch(r"\d+", r["answer"])
    ]
    deg_pairs = []
    for gold in _pick(rng, deg_rows, 15):
        n = int(gold)
        options = [str(n + 1), str(n - 1)] + [str(s - n) for s in (90, 180, 360) if 0 < s - n != n]
        deg_pairs.append((gold, rng.choice(options)))
    cases += _pairs("degree", deg_pairs, degree, rng)

    # -- units after the value (plain words, \text{}, \mathrm{}, compound units) --
    unit_re = re.compile(
        r"\b(miles|hours|minutes|meters|feet|inches|pounds|days|years|weeks|seconds|liters)\b"
    )
    unit_rows = []
    for r in gsm:
        last = r["problem"].rsplit(".", 1)[-1]
        m = unit_re.search(last)
        if m:
            unit_rows.append((r, m.group(1)))

    for row, unit in _pick(rng, unit_rows, 15):
        gold = row["answer"]
        near = _int_near(gold, rng, row["solution"])
        for ans, label in ((gold, True), (near, False)):
            cases.append(
                (
                    "units",
                    gold,
                    rng.choice(
                        [
                            f"{WORK}\n\\boxed{{{ans} \\text{{ {unit}}}}}",
                            f"{WORK}\nThe answer is {ans} {unit}.",
                            f"{WORK}\n**Answer:** ${ans}\\ \\mathrm{{{unit}}}$",
                        ]
                    ),
                    label,
                )
            )
    speed = [r for r in minerva if re.fullmatch(r"\d+(\.\d+)?", r["answer"])]
    for row in _pick(rng, speed, 3):
        gold = row["answer"]
        near = _latex_near(gold, rng)
        cases.append(("units", gold, f"{WORK}\n\\boxed{{{gold} \\text{{ m/s}}}}", True))
        cases.append(("units", gold, f"{WORK}\nThe answer is ${gold}\\,\\mathrm{{m/s^2}}$.", True))
        cases.append(("units", gold, f"{WORK}\n\\boxed{{{near} \\text{{ m/s}}}}", False))
        cases.append(("units", gold, f"{WORK}\nThe answer is ${near}\\,\\mathrm{{m/s^2}}$.", False))

    # -- \pm against the list of both values --
    pm_cases = _pm_cases(data_dir)
    cases += pm_cases

    # -- e-notation against \times 10^{n}, in several formats --
    sci_golds = [r["answer"] for r in minerva if re.fullmatch(r"\d(\.\d+)?e-?\d+", r["answer"])]
    for gold in _pick(rng, sci_golds, 9):
        mant, exp = gold.split("e")
        e = int(exp)
        right = [
            f"{WORK}\n\\boxed{{{mant} \\times 10^{{{e}}}}}",
            f"{WORK}\nThe answer is ${mant} \\times 10^{{{e}}}$ kg.",
            f"{WORK}\nFinal Answer: The final answer is ${mant}\\cdot10^{{{e}}}$. I hope it is correct.",
            f"{WORK}\n**Answer:** {mant}E{'+' if e >= 0 else ''}{e}",
        ]
        wrong = [
            f"{WORK}\n\\boxed{{{mant} \\times 10^{{{e + 1}}}}}",
            f"{WORK}\nThe answer is ${mant} \\times 10^{{{-e}}}$ kg.",
            f"{WORK}\nFinal Answer: The final answer is ${_bump_last_digit(mant)}\\cdot10^{{{e}}}$. I hope it is correct.",
            f"{WORK}\n**Answer:** {mant}e{e - 1}",
        ]
        picks = rng.sample(range(4), 2)
        for i in picks:
            cases.append(("sci", gold, right[i], True))
            cases.append(("sci", gold, wrong[i], False))
    return cases


def _pm_cases(data_dir: Path) -> list[Case]:
    """The golds written with ``\\pm`` or as a conjugate pair, each against both forms and near misses."""
    golds = {}
    for name in ("math500", "math_train_level3to5", "hmmt_feb25"):
        for r in _load(data_dir, name):
            golds[r["id"]] = r["answer"]
    rows = [
        # (gold id, the \pm form, the list form, near misses)
        (
            "math-train-4200",
            "1 \\pm \\sqrt{2}",
            "1+\\sqrt{2}, 1-\\sqrt{2}",
            ["1+\\sqrt{2}", "-1 \\pm \\sqrt{2}"],
        ),
        (
            "math-train-4644",
            "2 \\pm \\sqrt{2}",
            "2-\\sqrt{2}, 2+\\sqrt{2}",
            ["2-\\sqrt{2}", "2 \\pm \\sqrt{3}"],
        ),
        (
            "test/intermediate_algebra/662.json",
            "x = 1 \\pm \\sqrt{19}",
            "1 + \\sqrt{19}, 1 - \\sqrt{19}",
            ["1 + \\sqrt{19}", "1 \\pm \\sqrt{17}"],
        ),
        (
            "test/precalculus/768.json",
            "3 \\pm 2\\sqrt{2}",
            "3+2\\sqrt{2}, 3-2\\sqrt{2}",
            ["3-2\\sqrt{2}", "3 \\pm \\sqrt{2}"],
        ),
        (
            "2025-HMMT-Feb-10",
            "\\frac{-1\\pm\\sqrt{17}}{2}",
            "\\frac{-1-\\sqrt{17}}{2}, \\frac{-1+\\sqrt{17}}{2}",
            ["\\frac{-1+\\sqrt{17}}{2}", "\\frac{1\\pm\\sqrt{17}}{2}"],
        ),
        (
            "test/intermediate_algebra/2015.json",
            "1\\pm\\sqrt{5}, -2",
            "-2, 1+\\sqrt{5}, 1-\\sqrt{5}",
            ["1+\\sqrt{5}, -2", "1\\pm\\sqrt{5}"],
        ),
    ]
    cases: list[Case] = []
    for row_id, pm, listed, nears in rows:
        gold = golds[row_id]
        cases.append(("pm", gold, f"{WORK}\n\\boxed{{{pm}}}", True))
        cases.append(("pm", gold, f"{WORK}\nThe answer is ${listed}$.", True))
        cases.append(("pm", gold, f"{WORK}\n**Final Answer**\n\\[\n{pm}\n\\]", True))
        for near in nears:
            cases.append(("pm", gold, f"{WORK}\n\\boxed{{{near}}}", False))
    return cases


@pytest.fixture(scope="module")
def cases(shared_data_dir) -> list[Case]:
    return build_cases(shared_data_dir)


@pytest.fixture(scope="module")
def verdicts(cases):
    with MathVerifier(num_workers=2, timeout=10.0) as verifier:
        return verifier.verify_batch([c[2] for c in cases], [c[1] for c in cases])


def test_every_format_is_covered(cases):
    counts = Counter(c[0] for c in cases)
    assert dict(counts) == COUNTS
    assert sum(counts.values()) >= 400
    for fmt in COUNTS:
        labels = [c[3] for c in cases if c[0] == fmt]
        assert len(labels) >= 25, fmt
        assert 0.4 <= labels.count(False) / len(labels) <= 0.6, fmt  # half near misses


@pytest.mark.parametrize("fmt", list(COUNTS))
def test_format(fmt, cases, verdicts):
    wrong = []
    for (case_fmt, gold, response, expected), verdict in zip(cases, verdicts):
        if case_fmt != fmt:
            continue
        ok = verdict.correct and verdict.reason in CORRECT if expected else not verdict.correct
        if not ok:
            wrong.append(f"gold={gold!r} response={response[-70:]!r} -> {verdict}")
    assert not wrong, f"{len(wrong)} {fmt} pairs misjudged:\n" + "\n".join(wrong)


# The rows of issue 12's table and its wrong acceptances, on real golds (MATH-500 ids), end to end
# through one pool: each was misjudged before the fix.
ISSUE_ROWS = [
    ("test/algebra/276.json", "Final Answer: The final answer is $12$. I hope it is correct.", True),
    ("test/counting_and_probability/282.json", "**Answer:** $\\frac{1}{2}$", True),
    ("test/algebra/276.json", "The answer is $\\$12.00$.", True),
    ("test/geometry/248.json", "\\boxed{5 \\text{ m/s}}", True),
    ("2025-HMMT-Feb-10", "\\boxed{\\frac{-1\\pm\\sqrt{17}}{2}}", True),
    ("test/algebra/276.json", "\\boxed{12.00001}", False),
    ("test/algebra/276.json", "\\boxed{12.5}", False),
    ("test/algebra/276.json", "\\boxed{1\x002}", False),
    ("test/geometry/248.json", "\\boxed{" + "+".join(["x"] * 3000) + "}", False),
]


def test_issue_rows(shared_data_dir):
    golds = {}
    for name in ("math500", "hmmt_feb25"):
        golds.update({r["id"]: r["answer"] for r in _load(shared_data_dir, name)})
    with MathVerifier(num_workers=1, timeout=10.0) as verifier:
        verdicts = verifier.verify_batch([r[1] for r in ISSUE_ROWS], [golds[r[0]] for r in ISSUE_ROWS])
    for (row_id, response, expected), verdict in zip(ISSUE_ROWS, verdicts):
        assert verdict.correct is expected, (golds[row_id], response[:80], verdict)
    assert verdicts[-1].reason == Reason.TOO_LONG
