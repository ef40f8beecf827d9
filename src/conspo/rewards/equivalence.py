"""Decide whether a predicted answer equals the gold answer: fast exact paths, then math-verify.

:func:`fast_equivalence` is pure Python and cheap, so it runs in the trainer's process and settles most
realistic items (numbers, choice letters, identical strings). What it cannot settle goes to
:func:`symbolic_equivalence` (math-verify), which can hang: the :class:`~conspo.rewards.MathVerifier`
runs it in worker processes under a hard wall-clock timeout. math-verify is imported lazily.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache

from conspo.rewards.latex_arith import compare_expressions
from conspo.rewards.verdict import Reason, Verdict, make_verdict

__all__ = [
    "DEFAULT_REL_TOL",
    "check_equivalence",
    "fast_equivalence",
    "normalize_answer",
    "parse_number",
    "symbolic_equivalence",
]

DEFAULT_REL_TOL = 1e-6
"""Relative tolerance for non-integer numbers (INFERRED: math-verify rounds floats to 6 digits)."""

_FAST_MAX_CHARS = 2000  # longer answers go straight to the symbolic path, where the timeout guards them
_MAX_EXPONENT = 400  # 1e400 still compares exactly; a larger power of ten is left to the workers

_WRAPPERS = ("\\text", "\\textbf", "\\textit", "\\mathrm", "\\mathbf", "\\mbox", "\\operatorname")
_WRAPPER_RE = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_SPACING_RE = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~|\\displaystyle|\\left(?![a-zA-Z])|\\right(?![a-zA-Z])")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree")
_UNITS = {
    "cm", "m", "km", "mm", "in", "inch", "inches", "ft", "feet", "foot", "yd", "yards", "meter", "meters",
    "metres", "mile", "miles", "unit", "units", "degree", "degrees", "dollar", "dollars", "cent", "cents",
    "hour", "hours", "minute", "minutes", "second", "seconds", "day", "days", "week", "weeks", "year",
    "years", "mph", "kg", "g", "lb", "lbs", "pounds", "sq", "square", "cubic", "percent", "points",
}  # fmt: skip
_UNIT_TAIL_RE = re.compile(r"^(.*?[\d}])\s+([A-Za-z]+(?:\s+[A-Za-z]+)?)\.?$")
_CHOICE_RE = re.compile(r"^\(?([A-E])\)?[.:]?$")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_DECIMAL_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_SCI_RE = re.compile(r"^(.+?)(?:\\times|\\cdot|\*|x)10\^(?:\{([+-]?\d+)\}|([+-]?\d))$")
_FRAC_RE = re.compile(r"^([+-]?)\\frac(?:\{([^{}]+)\}|(\d))(?:\{([^{}]+)\}|(\d))$")
_MIXED_RE = re.compile(r"^([+-]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")
_SLASH_RE = re.compile(r"^([+-]?[\d.]+)/([+-]?[\d.]+)$")


def _strip_outer_braces(s: str) -> str:
    """``{{5}}`` -> ``5``: drop group braces around the whole answer, in one linear pass."""
    k = min(len(s) - len(s.lstrip("{")), len(s) - len(s.rstrip("}")))
    while k > 0:
        inner, depth = s[k:-k], 0
        for m in re.finditer(r"\\.|[{}]", inner):
            depth += {"{": 1, "}": -1}.get(m.group(), 0)
            if depth < 0:
                break
        if depth == 0:
            return inner
        k = 0 if k == 1 else 1  # unbalanced inside: retry with a single pair, then give up
    return s


def _unwrap_text(s: str) -> str:
    # Innermost first, a bounded number of rounds: pathological nesting stays linear-ish.
    for _ in range(5):
        new = _WRAPPER_RE.sub(r"\1", s)
        if new == s:
            break
        s = new
    return s


@lru_cache(maxsize=65536)
def normalize_answer(answer: str) -> str:
    """A canonical string for exact comparison.

    Drops ``$``, spacing commands, ``\\left``/``\\right``, degree signs, a trailing period and all
    whitespace; turns ``\\dfrac``/``\\tfrac`` into ``\\frac``, ``{,}`` into ``,``; unwraps
    ``\\text{...}``-like wrappers; strips a trailing plain-word unit after a number (``12 cm``).
    """
    s = _strip_outer_braces(answer.strip().replace("\u2212", "-"))
    s = (
        s.replace("\\$", "")
        .replace("$", "")
        .replace("\\dfrac", "\\frac")
        .replace("\\tfrac", "\\frac")
        .replace("{,}", ",")
    )
    s = _SPACING_RE.sub(" ", s)
    s = _DEGREE_RE.sub("", s)
    s = _unwrap_text(s)
    s = s.replace("\\%", "%").strip().rstrip(".").strip()
    unit = _UNIT_TAIL_RE.match(s)
    if unit and all(word.lower() in _UNITS for word in unit.group(2).split()):
        s = unit.group(1)
    # A "x = 5" answer to "find x" keeps its value only when the left side is a single letter.
    if re.match(r"^[a-zA-Z]\s*=\s*[^=<>]+$", s) and "," not in s:
        s = s.split("=", 1)[1]
    # "\lambda k" keeps its space (it ends the command name); every other space goes.
    s = re.sub(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])", "\\1\x00", s)
    return re.sub(r"\s+", "", s).replace("\x00", " ")


def _to_fraction(literal: str) -> Fraction | None:
    m = _DECIMAL_RE.match(literal)
    if not m:
        return None
    try:
        dec = Decimal(literal)
    except InvalidOperation:
        return None
    if not dec.is_finite() or abs(int(dec.as_tuple().exponent)) > _MAX_EXPONENT:
        return None
    return Fraction(dec)


@lru_cache(maxsize=65536)
def parse_number(answer: str) -> tuple[Fraction, bool, bool] | None:
    """``(value, is_percent, is_integer_literal)`` when ``answer`` is a plain number, else None.

    Understands ``1,000`` ``1{,}000`` ``1\\!000`` ``025`` ``-3.5`` ``3.83e35`` ``3.83\\times 10^{35}``
    ``\\frac{3}{4}`` ``\\dfrac34`` ``3/4`` ``14\\frac{6}{7}`` (mixed number) ``50\\%`` and units/``\\text{}``
    around the number. Never evaluates powers other than a bounded power of ten.
    """
    if len(answer) > _FAST_MAX_CHARS:
        return None
    s = normalize_answer(answer)
    if not s:
        return None
    percent = s.endswith("%")
    if percent:
        s = s[:-1]
    if s.startswith("+"):
        s = s[1:]
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    value = _to_fraction(s)
    if value is not None:
        return value, percent, "." not in s and "e" not in s.lower()
    m = _SCI_RE.match(s)
    if m:
        mant = _to_fraction(m.group(1))
        exp = int(m.group(2) or m.group(3))
        if mant is not None and abs(exp) <= _MAX_EXPONENT:
            return mant * Fraction(10) ** exp, percent, False
        return None
    m = _FRAC_RE.match(s)
    if m:
        num, den = _to_fraction(m.group(2) or m.group(3)), _to_fraction(m.group(4) or m.group(5))
        if num is not None and den:
            return (-1 if m.group(1) == "-" else 1) * num / den, percent, False
        return None
    m = _MIXED_RE.match(s)
    if m and int(m.group(4)) != 0:
        value = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return (-value if m.group(1) == "-" else value), percent, False
    m = _SLASH_RE.match(s)
    if m:
        num, den = _to_fraction(m.group(1)), _to_fraction(m.group(2))
        if num is not None and den:
            return num / den, percent, False
    return None


def _close(a: Fraction, b: Fraction, rel_tol: float) -> bool:
    if a == b:
        return True
    return abs(a - b) <= Fraction(rel_tol) * max(abs(a), abs(b))


def _numbers_equal(
    gold: tuple[Fraction, bool, bool], pred: tuple[Fraction, bool, bool], rel_tol: float
) -> bool:
    g, g_pct, g_int = gold
    p, p_pct, p_int = pred
    # Integers compare exactly: with a relative tolerance 99999 would equal 100000.
    tol = 0.0 if (g_int and p_int) else rel_tol
    candidates = [p]
    if g_pct and not p_pct:
        candidates.append(p * 100)  # "50\%" answered as 0.5
    if p_pct and not g_pct:
        candidates.append(p / 100)  # 0.5 answered as "50\%"
    return any(_close(g, c, tol) for c in candidates)


def _choice(s: str) -> str | None:
    m = _CHOICE_RE.match(s)
    return m.group(1) if m else None


def fast_equivalence(gold: str, pred: str, rel_tol: float = DEFAULT_REL_TOL) -> Reason | None:
    """The verdict's reason when the cheap paths settle it, else None (symbolic check needed).

    Returns ``Reason.EXACT`` (same normalized string or choice letter), ``Reason.NUMERIC`` (equal
    numbers), ``Reason.SYMBOLIC`` (arithmetic expressions that agree at random points, see
    :mod:`conspo.rewards.latex_arith`), ``Reason.NOT_EQUAL`` (numbers, choice letters or arithmetic
    expressions that differ).
    """
    g, p = normalize_answer(gold), normalize_answer(pred)
    if g == p and g:
        return Reason.EXACT
    if not p:
        return Reason.NOT_EQUAL if g else None
    g_choice, p_choice = _choice(g), _choice(p)
    if g_choice is not None:
        if p_choice is not None:
            return Reason.EXACT if g_choice == p_choice else Reason.NOT_EQUAL
        if re.match(r"^\([A-E]\)(?![-+*/^=_.,])", p):  # "(B) 12", not "(E)+1"
            return Reason.EXACT if p.lstrip("(")[0] == g_choice else Reason.NOT_EQUAL
    if g.isalpha() and p.isalpha() and len(g) > 1 and g.casefold() == p.casefold():
        return Reason.EXACT  # a word answer ("Even", "\text{even}")
    g_num, p_num = parse_number(gold), parse_number(pred)
    if g_num is not None and p_num is not None:
        return Reason.NUMERIC if _numbers_equal(g_num, p_num, rel_tol) else Reason.NOT_EQUAL
    if g_num is not None and g_num[1]:
        return None  # a percentage against an expression: math-verify knows the percent forms
    if len(g) <= _FAST_MAX_CHARS and len(p) <= _FAST_MAX_CHARS:
        same = _same_value(g, p, rel_tol)
        if same is not None:
            return Reason.SYMBOLIC if same else Reason.NOT_EQUAL
    return None


_BRACKETS = {"(": ")", "[": "]", "\\{": "\\}"}


def _split_top(s: str) -> list[str] | None:
    """Split on commas outside any bracket; None when the brackets do not balance."""
    parts, depth, start = [], 0, 0
    for m in re.finditer(r"\\[{}]|[(\[{]|[)\]}]|,", s):
        tok = m.group()
        if tok == ",":
            if depth == 0:
                parts.append(s[start : m.start()])
                start = m.end()
        elif tok in ("(", "[", "{", "\\{"):
            depth += 1
        else:
            depth -= 1
            if depth < 0:
                return None
    return parts + [s[start:]] if depth == 0 else None


def _shape(s: str) -> tuple[str, list[str]] | None:
    """("(", elements) for a bracketed list, ("", elements) for a bare comma list, else None."""
    for left, right in _BRACKETS.items():
        if s.startswith(left) and s.endswith(right):
            inner = s[len(left) : -len(right)]
            parts = _split_top(inner)
            # "(1,2)(3,4)" or "(1,2]": the first bracket must close at the very end
            if parts is not None and _split_top(s[len(left) :]) is None:
                return (left + right, parts) if len(parts) > 1 or left == "\\{" else None
    if s.startswith(("(", "[")) and s.endswith((")", "]")):
        inner = s[1:-1]
        parts = _split_top(inner)
        if parts is not None and len(parts) == 2 and _split_top(s[1:]) is None:
            return s[0] + s[-1], parts  # a half-open interval "(3,4]"
    parts = _split_top(s)
    return ("", parts) if parts is not None and len(parts) > 1 else None


_ASSIGNED_RE = re.compile(
    r"^[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?(?:\([a-zA-Z](?:,[a-zA-Z])*\))?$"
)  # y, f(x), a_n


def _same_equation(g: str, p: str, rel_tol: float, depth: int) -> bool | None:
    """Two equations with the same left side: ``f(x)=...`` compares right sides (a definition, as
    math-verify does); any other left side only when both right sides are numbers (``L=0`` vs ``L=1``
    have disjoint solution sets). Everything else is math-verify's."""
    sides_g, sides_p = g.split("="), p.split("=")
    if len(sides_g) != 2 or len(sides_p) != 2 or re.search(r"[<>]|\\[lg]e|\\neq", g + p):
        return None
    (lhs_g, rhs_g), (lhs_p, rhs_p) = sides_g, sides_p
    if lhs_g != lhs_p or not lhs_g:
        return None
    if _ASSIGNED_RE.match(lhs_g):
        return _same_value(rhs_g, rhs_p, rel_tol, depth + 1)
    g_num, p_num = parse_number(rhs_g), parse_number(rhs_p)
    if g_num is not None and p_num is not None:
        return _numbers_equal(g_num, p_num, rel_tol)
    return None


def _same_value(g: str, p: str, rel_tol: float, depth: int = 0) -> bool | None:
    """Equal / different / undecided, for normalized numbers, arithmetic and lists of them."""
    if g == p:
        return True
    if depth > 3 or "\\cup" in g + p or "\\pm" in g + p:
        return None
    g_num, p_num = parse_number(g), parse_number(p)
    if g_num is not None and p_num is not None:
        return _numbers_equal(g_num, p_num, rel_tol)
    g_shape, p_shape = _shape(g), _shape(p)
    if g_shape is None and p_shape is None:
        if "=" in g or "=" in p:
            return _same_equation(g, p, rel_tol, depth)
        return compare_expressions(g, p, rel_tol)
    if g_shape is None or p_shape is None or g_shape[0] != p_shape[0]:
        return None  # a list against a single value, or different brackets: math-verify decides
    (kind, g_items), (_, p_items) = g_shape, p_shape
    if kind in ("()", "[]", "(]", "[)"):  # tuples, vectors, intervals: in order
        if len(g_items) != len(p_items):
            return False if kind == "()" and min(len(g_items), len(p_items)) > 1 else None
        verdicts = [_same_value(a, b, rel_tol, depth + 1) for a, b in zip(g_items, p_items)]
        if False in verdicts:
            return False if None not in verdicts or kind == "()" else None
        return None if None in verdicts else True
    # sets and bare answer lists: order-free, every element matched both ways
    table = [[_same_value(a, b, rel_tol, depth + 1) for b in p_items] for a in g_items]
    if any(None in row for row in table):
        return None
    return all(any(row) for row in table) and all(any(col) for col in zip(*table))


# -- symbolic path (math-verify); runs inside verifier workers ---------------------------------------


def _math_verify():
    import math_verify
    import math_verify.grader
    import math_verify.parser

    # The timeouts are disabled (they need signal.alarm); the warning about it is expected here.
    math_verify.grader.TIMEOUT_WARNING_SHOWN = True
    math_verify.parser.TIMEOUT_WARNING_SHOWN = True
    return math_verify


def _as_latex(answer: str) -> str:
    s = answer.strip().strip("$").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return "\\boxed{" + s + "}"


@lru_cache(maxsize=4096)
def _parse(answer: str):
    mv = _math_verify()
    return mv.parse(_as_latex(answer), parsing_timeout=None)


_LETTER_RE = re.compile(r"\\[a-zA-Z]+|([a-df-hj-zA-Z])")  # commands skipped; e and i may be constants


def _stray_number(text: str, parsed: list) -> bool:
    """math-verify fell back to a fragment: a plain number parsed from an answer with variables in it.

    When its LaTeX parser fails part-way it can return a stray number (``\\frac{1}{3} E_{1}+\\frac{2}{3}
    E_{2}`` parses as 2/3), and two different answers then compare equal.
    """
    expr = parsed[0]
    if not getattr(expr, "is_number", False):
        return False
    body = _WRAPPER_RE.sub("", text)  # \text{...} words are names or units, not variables
    return any(m.group(1) for m in _LETTER_RE.finditer(body))


def symbolic_equivalence(
    gold: str, pred: str, *, rel_tol: float = DEFAULT_REL_TOL, symmetric: bool = False
) -> bool:
    """math-verify's ``verify(parse(gold), parse(pred))`` with its own (signal) timeouts disabled.

    It can hang on adversarial input: call it only where a hard timeout guards it (a verifier worker).
    ``symmetric=True`` requires equality in both directions (math-verify is asymmetric in the gold).
    """
    mv = _math_verify()
    gold_parsed, pred_parsed = _parse(gold), _parse(pred)
    if not gold_parsed or not pred_parsed:
        return False
    if _stray_number(gold, gold_parsed) or _stray_number(pred, pred_parsed):
        return normalize_answer(gold) == normalize_answer(pred)
    # float_rounding keeps math-verify's decimal comparison in line with rel_tol (digits after the point).
    digits = max(1, min(15, round(-__import__("math").log10(rel_tol)))) if rel_tol > 0 else 15
    ok = mv.verify(gold_parsed, pred_parsed, float_rounding=digits, timeout_seconds=None)
    if ok and symmetric:
        ok = mv.verify(pred_parsed, gold_parsed, float_rounding=digits, timeout_seconds=None)
    return bool(ok)


def check_equivalence(
    gold: str, pred: str | None, *, rel_tol: float = DEFAULT_REL_TOL, symbolic: bool = True
) -> Verdict:
    """The unshaped verdict on an already-extracted answer, in this process.

    The fast paths first; then (``symbolic=True``) math-verify, **without a timeout**: for untrusted
    input use :meth:`MathVerifier.verify_batch`, which runs this under a hard wall-clock limit.

    >>> check_equivalence("1000", "1{,}000").reason
    <Reason.NUMERIC: 'numeric'>
    """
    if not isinstance(gold, str) or not gold.strip():
        return make_verdict(False, pred if isinstance(pred, str) else None, Reason.INVALID_GOLD)
    if not isinstance(pred, str) or not pred.strip():
        return make_verdict(False, None, Reason.NO_ANSWER)
    reason = fast_equivalence(gold, pred, rel_tol)
    if reason is None:
        if symbolic and symbolic_equivalence(gold, pred, rel_tol=rel_tol):
            reason = Reason.SYMBOLIC
        else:
            reason = Reason.NOT_EQUAL
    return make_verdict(reason is not Reason.NOT_EQUAL, pred, reason)
