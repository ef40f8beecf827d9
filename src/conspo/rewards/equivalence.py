"""Decide whether a predicted answer equals the gold answer: fast exact paths, then math-verify.

:func:`fast_equivalence` is pure Python and cheap, so it runs in the trainer's process and settles most
realistic items (numbers, choice letters, identical strings). What it cannot settle goes to
:func:`symbolic_equivalence` (math-verify), which can hang: the :class:`~conspo.rewards.MathVerifier`
runs it in worker processes under a hard wall-clock timeout. math-verify is imported lazily.

Why one file of about 600 lines: the rules are one ordered decision procedure (normalize, numbers, choices,
equations, values, then math-verify) whose order is the behaviour (docs/rewards.md), and they share the
normalizers.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from functools import lru_cache
from typing import NamedTuple

from conspo.rewards.extraction import MAX_ANSWER_CHARS, _matching_brace, unwrap_whole
from conspo.rewards.latex_arith import compare_expressions
from conspo.rewards.verdict import CORRECT_REASONS, Reason, Verdict, make_verdict

__all__ = [
    "DEFAULT_REL_TOL",
    "check_equivalence",
    "fast_equivalence",
    "normalize_answer",
    "parse_number",
    "symbolic_equivalence",
]

DEFAULT_REL_TOL = 1e-6
"""Relative tolerance when a decimal literal is compared (exact forms compare exactly; INFERRED:
math-verify rounds floats to 6 digits)."""

_FAST_MAX_CHARS = 2000  # longer answers go straight to the symbolic path, where the timeout guards them
_MAX_EXPONENT = 400  # 1e400 still compares exactly; a larger power of ten is left to the workers

_WRAPPERS = ("\\text", "\\textbf", "\\textit", "\\mathrm", "\\mathbf", "\\mbox", "\\operatorname")
# One level of braces inside (\mathrm{erg\,s^{-1}}); the alternatives start differently: no backtracking.
_WRAPPER_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox)\s*\{((?:[^{}]|\{[^{}]*\})*)\}"
)
_TEXT_CMD_RE = re.compile(r"\\(?:text|textrm|textnormal|mathrm|mbox|rm|operatorname)\s*\{")
_TEXT_UNIT_RE = re.compile(r"[\sA-Za-zµΩ°/.,;!~^{}\\()\-0-9_]*")
_AFTER_UNIT_RE = re.compile(r"\s*(?:\^\s*\{?\s*-?\d+\s*\}?)?\s*\.?\s*")
# What a value ends with: a digit, a closing bracket, a lone letter (2x) or \pi; never a command name.
_VALUE_END_RE = re.compile(r"(?:\d|[})\]]|(?<![\\A-Za-z])[A-Za-z]|\\pi)$")
_SPACING_RE = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~|\\displaystyle|\\left(?![a-zA-Z])|\\right(?![a-zA-Z])")
# A degree sign, with the temperature scale that may follow it (90^\circ, 90°, 25^{\circ}C, \degree F).
_DEGREE_RE = re.compile(
    r"(?:\^\s*\{?\s*\\circ\s*\}?|°|\\degree(?![a-zA-Z]))\s*(?:\\(?:text|mathrm)\s*\{\s*[CF]\s*\}|[CF](?![A-Za-z]))?"
)
_CURRENCY_RE = re.compile(r"\\\$|\$|€|£|¥|₹|\\euro|\\pounds|\\yen")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_PERCENT_WORD_RE = re.compile(r"\s*(?:\\%|%|\b(?:percent|per\s*cent)\b)\s*$", re.IGNORECASE)
_UNITS = {
    "cm", "m", "km", "mm", "in", "inch", "inches", "ft", "feet", "foot", "yd", "yards", "meter", "meters",
    "metres", "mile", "miles", "unit", "units", "degree", "degrees", "dollar", "dollars", "cent", "cents",
    "hour", "hours", "minute", "minutes", "second", "seconds", "day", "days", "week", "weeks", "year",
    "years", "mph", "kg", "g", "lb", "lbs", "pounds", "sq", "square", "cubic", "points", "s", "h", "min",
    "l", "L", "ml", "mL", "K", "N", "J", "W", "V", "A", "Pa", "Hz", "eV", "mol", "rad",
}  # fmt: skip
# Words after a number that are never a unit: they join, operate or name a constant.
_NOT_UNITS = {
    "and", "or", "to", "times", "plus", "minus", "over", "divided", "by", "of", "is", "are", "pi", "sqrt",
    "i", "e", "x", "y", "z", "n", "k", "t", "a", "b", "c", "d", "r", "p", "q", "u", "v", "w",
    "mod", "not", "no", "yes", "true", "false", "infinity", "inf", "sin", "cos", "tan", "sec", "csc",
    "cot", "log", "ln", "exp", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh", "lim", "max", "min",
    "gcd", "lcm", "det", "choose", "factorial", "if", "for", "when", "where", "otherwise", "such", "that",
    "with", "only", "all", "any", "none", "undefined", "more", "less", "than", "at", "least", "most",
}  # fmt: skip
# A unit after a value: words, optional powers, joined by /, \cdot, *, "per" (5 m/s, 9.8 m/s^2, 3 kg m^2).
_UNIT_WORD = r"[A-Za-zµΩ]+(?:\^\{?-?\d\}?)?"
_UNIT_TAIL_RE = re.compile(
    rf"^(.*?[\d}}])\s*((?:{_UNIT_WORD})(?:\s*(?:/|\\cdot|\*|\s|\bper\b)\s*(?:{_UNIT_WORD})){{0,3}})\.?$"
)
_GREEK_LHS = r"\\(?:alpha|beta|gamma|delta|theta|lambda|mu|phi|omega|rho|sigma|tau)"
_ASSIGN_RE = re.compile(rf"^(?:[a-zA-Z]|{_GREEK_LHS})(?:_\{{?[a-zA-Z0-9]+\}}?)?\s*=\s*([^=<>]+)$")
_CHOICE_RE = re.compile(r"^\(?([A-E])\)?[.:]?$")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_DECIMAL_RE = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")
_SCI_RE = re.compile(r"^(.+?)(?:\\times|\\cdot|\*|x|×)10\^(?:\{([+-]?\d+)\}|([+-]?\d+))$")
_POW10_RE = re.compile(r"^10\^(?:\{([+-]?\d+)\}|([+-]?\d+))$")
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
    # Innermost first, a bounded number of rounds: pathological nesting stays linear-ish. The space
    # keeps a unit apart from its value (5\text{m} -> "5 m"); spaces go at the end of normalization.
    for _ in range(5):
        new = _WRAPPER_RE.sub(r" \1", s)
        if new == s:
            break
        s = new
    return s


def _strip_text_unit(s: str) -> str:
    """``20.39 \\mathrm{~nm}``, ``3.8\\times10^{35}\\,\\mathrm{erg\\,s^{-1}}`` -> the value: a trailing
    ``\\text{}`` / ``\\mathrm{}`` group of unit-like words (any word: text mode marks it as a name) after
    a value. Joining and operator words (``\\text{ or }``, ``\\text{ and }``) are never units."""
    for _ in range(3):
        starts = list(_TEXT_CMD_RE.finditer(s))
        if not starts:
            return s
        m = starts[-1]
        close = _matching_brace(s, m.end() - 1)
        if close < 0 or not _AFTER_UNIT_RE.fullmatch(s, close + 1):
            return s
        content, value = s[m.end() : close], s[: m.start()]
        words = re.findall(r"[A-Za-zµΩ]+", content)
        if (
            not words
            or not _TEXT_UNIT_RE.fullmatch(content)
            or any(w.lower() in _NOT_UNITS for w in words if w not in _UNITS)
            or not _VALUE_END_RE.search(_SPACING_RE.sub(" ", value).strip())
        ):
            return s
        s = value.rstrip()
    return s


def _strip_unit(s: str) -> str:
    """``12 cm`` / ``5 m/s`` / ``9.8 m/s^2`` / ``20 days`` -> the value; ``2 and 3``, ``5 x``, ``3abc`` unchanged."""
    m = _UNIT_TAIL_RE.match(s)
    if not m or not m.group(1).strip():
        return s
    words = re.findall(r"[A-Za-zµΩ]+", m.group(2))
    if not words or len(words) > 4 or any(w.lower() in _NOT_UNITS and w not in _UNITS for w in words):
        return s
    glued = not s[len(m.group(1)) :][:1].isspace()
    if glued and not all(w in _UNITS and len(w) > 1 for w in words):
        return s  # "5m" or "3abc" may be a product; "5 m", "5\\text{m}" and "5cm" are measurements
    # A plain word is a unit when it is known, or long enough not to be a variable (12 apples).
    if all(w in _UNITS or w.lower() in _UNITS or len(w) >= 3 for w in words):
        return m.group(1).rstrip()
    return s


_APPROX_RE = re.compile(r"\\approx|≈|\\simeq")
_JOIN_WORD_RE = re.compile(r"(?<=\S)\s*,?\s+(?:and|or)\s+(?=\S)")
_SPACE_RE = re.compile(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])|\s+")


@lru_cache(maxsize=65536)
def normalize_answer(answer: str) -> str:
    """A canonical string for exact comparison.

    Drops ``$``, currency signs, spacing commands, ``\\left``/``\\right``, degree signs (with a ``C``/``F``
    scale), a trailing period and all whitespace; turns ``\\dfrac``/``\\tfrac`` into ``\\frac``, ``{,}``
    into ``,``, a trailing "percent" into ``%``; unwraps ``\\text{...}``-like wrappers; strips a unit
    after a value (``12 cm``, ``5\\text{ m/s}``, ``9.8 m/s^2``, ``20 days``); ``x = 5`` -> ``5`` when the
    left side is one letter (or a Greek letter, with a subscript). Control characters are kept (they
    make the answer unequal to anything, see :func:`fast_equivalence`).
    """
    s = unwrap_whole(_strip_outer_braces(answer.strip().replace("\u2212", "-").replace("\u2013", "-")))
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    s = _CURRENCY_RE.sub("", s)
    s = _DEGREE_RE.sub("", _strip_text_unit(s))
    s = _SPACING_RE.sub(" ", s)
    s = _unwrap_text(s)
    s = s.replace("\\%", "%").strip().rstrip(".").strip()
    if re.search(r"\d", s):  # "2 and 3", "x = 1 or x = 2": a list of answers
        s = _JOIN_WORD_RE.sub(",", s)
    s = _PERCENT_WORD_RE.sub("%", s) if re.search(r"\d", s) else s
    if not s.endswith("%"):
        s = _strip_unit(s)
    else:
        s = _strip_unit(s[:-1].rstrip()) + "%"
    s = _strip_outer_braces(s.strip())
    approx = _APPROX_RE.split(s)
    if len(approx) == 2 and approx[1].strip():
        # "x \\approx 1.6" is 1.6; "\\frac{1}{3} \\approx 0.33" is the exact value on the left.
        left = approx[0].strip()
        if left in ("", "+", "-"):  # "\\approx 8.24", "-\\approx 8.24"
            s = left.lstrip("+") + approx[1].strip()
        elif re.fullmatch(r"[a-zA-Z](?:_\{?\w+\}?)?", left):
            s = approx[1].strip()
        else:
            s = left
    # A "x = 5" answer to "find x" keeps its value only when the left side is a single letter.
    assign = _ASSIGN_RE.match(s)
    if assign and "," not in s:
        s = assign.group(1)
    # "\\lambda k" keeps its space (it ends the command name); every other space goes.
    return _SPACE_RE.sub(lambda m: m.group(1) + " " if m.group(1) else "", s).strip()


class ParsedNumber(NamedTuple):
    """A plain number read from an answer: its exact value, and how precisely it was written."""

    value: Fraction
    percent: bool
    """Written with ``%`` / ``\\%`` / "percent"."""
    ulp: Fraction | None
    """One unit in the last written place of a decimal literal (``12.50`` -> 0.01, ``3.8e35`` -> 1e34);
    None for an exact form (an integer, a fraction, a mixed number, an integer power of ten)."""

    @property
    def exact(self) -> bool:
        return self.ulp is None


def _to_decimal(literal: str) -> Decimal | None:
    if not _DECIMAL_RE.match(literal):
        return None
    try:
        dec = Decimal(literal)
    except InvalidOperation:
        return None
    if not dec.is_finite() or abs(int(dec.as_tuple().exponent)) > _MAX_EXPONENT:
        return None
    return dec


def _to_fraction(literal: str) -> Fraction | None:
    dec = _to_decimal(literal)
    return None if dec is None else Fraction(dec)


def _ulp(dec: Decimal, literal: str, shift: int = 0) -> Fraction | None:
    """The last written place of a decimal literal; None for an integer literal (exact)."""
    if "." not in literal and "e" not in literal.lower():
        return None if shift >= 0 else Fraction(10) ** shift
    return Fraction(10) ** (int(dec.as_tuple().exponent) + shift)


@lru_cache(maxsize=65536)
def parse_number(answer: str) -> ParsedNumber | None:
    """A :class:`ParsedNumber` ``(value, percent, ulp)`` when ``answer`` is a plain number, else None.

    Understands ``1,000`` ``1{,}000`` ``1\\!000`` ``025`` ``-3.5`` ``3.83e35`` ``3.83\\times 10^{35}``
    ``10^{6}`` ``\\frac{3}{4}`` ``\\dfrac34`` ``3/4`` ``14\\frac{6}{7}`` (mixed number) ``50\\%`` ``50 percent``
    and currency, units and ``\\text{}`` around the number. Never evaluates powers other than a
    bounded power of ten.
    """
    if len(answer) > _FAST_MAX_CHARS or _CONTROL_RE.search(answer):
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
    dec = _to_decimal(s)
    if dec is not None:
        return ParsedNumber(Fraction(dec), percent, _ulp(dec, s))
    m = _SCI_RE.match(s)
    if m:
        mant = m.group(1)
        mant = mant[1:] if mant.startswith("+") else mant
        dec = _to_decimal(mant)
        exp = int(m.group(2) or m.group(3))
        if dec is not None and abs(exp) <= _MAX_EXPONENT:
            # "3.83 \times 10^{35}" is written to 3 significant digits; "3 \times 10^6" to one.
            ulp = Fraction(10) ** (int(dec.as_tuple().exponent) + exp)
            return ParsedNumber(Fraction(dec) * Fraction(10) ** exp, percent, ulp)
        return None
    m = _POW10_RE.match(s)
    if m:
        exp = int(m.group(1) or m.group(2))
        return ParsedNumber(Fraction(10) ** exp, percent, None) if abs(exp) <= _MAX_EXPONENT else None
    m = _FRAC_RE.match(s)
    if m:
        num, den = _to_fraction(m.group(2) or m.group(3)), _to_fraction(m.group(4) or m.group(5))
        if num is not None and den:
            exact = "." not in (m.group(2) or "") + (m.group(4) or "")
            value = (-1 if m.group(1) == "-" else 1) * num / den
            return ParsedNumber(value, percent, None if exact else abs(value) * Fraction(1, 10**6))
        return None
    m = _MIXED_RE.match(s)
    if m and int(m.group(4)) != 0:
        value = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
        return ParsedNumber(-value if m.group(1) == "-" else value, percent, None)
    m = _SLASH_RE.match(s)
    if m:
        num, den = _to_fraction(m.group(1)), _to_fraction(m.group(2))
        if num is not None and den:
            exact = "." not in m.group(0)
            value = num / den
            return ParsedNumber(value, percent, None if exact else abs(value) * Fraction(1, 10**6))
    return None


def _numbers_equal(gold: ParsedNumber, pred: ParsedNumber, rel_tol: float) -> bool:
    """Equal numbers. Exact forms compare exactly; a decimal literal only to the place it was written to.

    Two numbers are equal when their exact values are. Otherwise, when at least one side is a decimal
    literal, they are equal when they differ by at most half a unit in the last place of the coarser
    decimal **and** by at most ``rel_tol`` relatively: ``2.5`` vs ``2.5000001`` (gold to 1 place) is
    equal, ``12`` vs ``12.00001`` (an exact gold, a decimal written to 5 places that is not 12 at that
    place) and ``1000000`` vs ``1000000.5`` are not. Two exact forms (``99999`` vs ``100000``,
    ``\\frac{1}{3}`` vs ``\\frac{1}{4}``) never get a tolerance.
    """
    candidates = [(pred.value, pred.ulp)]
    if gold.percent and not pred.percent:
        candidates.append((pred.value * 100, None if pred.ulp is None else pred.ulp * 100))  # 0.5 for 50%
    if pred.percent and not gold.percent:
        candidates.append((pred.value / 100, None if pred.ulp is None else pred.ulp / 100))  # 50% for 0.5
    for value, ulp in candidates:
        if value == gold.value:
            return True
        ulps = [u for u in (gold.ulp, ulp) if u is not None]
        if not ulps:
            continue
        diff = abs(value - gold.value)
        if diff <= max(ulps) / 2 and diff <= Fraction(rel_tol) * max(abs(value), abs(gold.value)):
            return True
    return False


_CHOICE_LEAD_RE = re.compile(
    r"^(?:option|choice|answer)?\(?([A-E])\)(?![-+*/^=_.,]|$)|^(?:option|choice)\(?([A-E])\)?$"
)
_SET_LIKE_RE = re.compile(r"\\(?:pm|mp|in|cup|cap|\{|mid|setminus|emptyset|varnothing)|[<>]|\\[lg]e")
_BASE_RE = re.compile(r"^([0-9A-Fa-f]+)_\{?(\d+)\}?$")
_PM_RE = re.compile(r"\\(pm|mp)(?![a-zA-Z])")


def _expand_pm(s: str) -> str | None:
    """``a\\pm b`` -> ``a+b,a-b`` (one ``\\pm``/``\\mp`` outside a list), else None."""
    found = _PM_RE.findall(s)
    if len(found) != 1 or "," in s or "=" in s or "<" in s or ">" in s:
        return None
    plus, minus = ("+", "-") if found[0] == "pm" else ("-", "+")
    head, tail = _PM_RE.split(s, maxsplit=1)[0], _PM_RE.split(s, maxsplit=1)[2]
    return f"{head}{plus}{tail},{head}{minus}{tail}".replace("(+", "(").replace("{+", "{")


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
    if len(pred) > MAX_ANSWER_CHARS:
        return Reason.TOO_LONG
    if _CONTROL_RE.search(gold) or _CONTROL_RE.search(pred):
        # A NUL or escape byte is no part of any answer (and "1\x002" must not read as 12).
        return Reason.EXACT if gold == pred else Reason.NOT_EQUAL
    g, p = normalize_answer(gold), normalize_answer(pred)
    if g == p and g:
        return Reason.EXACT
    if not p:
        return Reason.NOT_EQUAL if g else None
    g_choice, p_choice = _choice(g), _choice(p)
    if g_choice is not None:
        if p_choice is not None:
            return Reason.EXACT if g_choice == p_choice else Reason.NOT_EQUAL
        letter = _CHOICE_LEAD_RE.match(p)  # "(B) 12", "B) 12", "option B", not "(E)+1"
        if letter:
            return Reason.EXACT if (letter.group(1) or letter.group(2)) == g_choice else Reason.NOT_EQUAL
    g_pm, p_pm = _expand_pm(g), _expand_pm(p)
    if g_pm is not None or p_pm is not None:
        # "\\frac{3\\pm\\sqrt{5}}{2}" is the list of its two values.
        if len(g) <= _FAST_MAX_CHARS and len(p) <= _FAST_MAX_CHARS:
            same = _same_value(g_pm or g, p_pm or p, rel_tol)
            if same is not None:
                return Reason.SYMBOLIC if same else Reason.NOT_EQUAL
            single = p if g_pm is not None else g
            one_sided = p_pm is None or g_pm is None
            if one_sided and "," not in single and not re.search(r"\\[{}]|\\in|\\cup", single):
                return Reason.NOT_EQUAL  # two values against one: a missing element
        return None
    g_base, p_base = _BASE_RE.match(g), _BASE_RE.match(p)
    if g_base and p_base:  # 1011_2, 40_{9}: a numeral in a base; digits and base must both match
        return Reason.EXACT if g_base.groups() == p_base.groups() else Reason.NOT_EQUAL
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
    for listed, other_shape, single in ((g_shape, p_shape, p), (p_shape, g_shape, g)):
        if (
            listed is not None
            and listed[0] == ""
            and other_shape is None
            and "," not in single
            and not _SET_LIKE_RE.search(single)
            and len(set(listed[1])) > 1
        ):
            return False  # "2, 3" against "2": a missing (or an extra) element
    if g_shape is None or p_shape is None or g_shape[0] != p_shape[0]:
        return None  # different brackets, or a set against a single value: math-verify decides
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
        # math-verify reads a list, not "\\pm" inside a fraction: give it the two values.
        gold_pm, pred_pm = _expand_pm(gold) or gold, _expand_pm(pred) or pred
        if symbolic and symbolic_equivalence(gold_pm, pred_pm, rel_tol=rel_tol):
            reason = Reason.SYMBOLIC
        else:
            reason = Reason.NOT_EQUAL
    return make_verdict(reason in CORRECT_REASONS, pred, reason)
