"""A tiny evaluator for arithmetic LaTeX answers, so cheap near misses never need math-verify.

It understands only a small, unambiguous grammar: numbers, variables (a letter or a Greek letter,
with an optional simple subscript), ``\\pi``, ``+ - * / ^``, ``\\cdot``/``\\times``, implicit
multiplication, brackets used as parentheses, ``\\frac``, ``\\sqrt``, ``\\sqrt[n]``, and ``\\sin \\cos
\\tan \\exp \\ln`` applied to a parenthesized argument. Anything else (other functions, commas,
relations, factorials, ``\\pm``, an implicit product right after a ``/`` as in ``1/2x``, powers past
64, magnitudes past 1e6, results that lost their digits to cancellation) gives None and the answer
goes to math-verify. Values are complex; variables take the same random values on both sides.

Two expressions that differ at some point are different (a sound "not equal"); two that agree at
three random points are equal with high probability (polynomial identity testing).
"""

from __future__ import annotations

import cmath
import math
import random
import re

__all__ = ["evaluate", "compare_expressions"]

_GREEK = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
    "hbar",  # symbols that are not Greek but behave like a variable
    "ell",
]
# A variable: one letter or a Greek letter, with an optional simple subscript (E_{1}, x_0, \omega_n).
_VARIABLE = r"(?:[a-zA-Z]|\\(?:" + "|".join(_GREEK) + r")(?![a-zA-Z]))(?:_(?:\{[a-zA-Z0-9]+\}|[a-zA-Z0-9]))?"
_VARIABLE_RE = re.compile(_VARIABLE)
_TOKEN_RE = re.compile(_VARIABLE + r"|\d+\.?\d*|\.\d+|\\[a-zA-Z]+|[-+*/^(){}\[\]]|\S")
_FUNCTIONS = {
    "\\sin": cmath.sin,
    "\\cos": cmath.cos,
    "\\tan": cmath.tan,
    "\\exp": cmath.exp,
    "\\ln": cmath.log,
}
_COMMANDS = {"\\frac", "\\sqrt", "\\pi", "\\cdot", "\\times", *_FUNCTIONS}
_WORD_RE = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{3,}")  # "pounds", not "\\frac"
_MAX_EXPONENT = 64
_MAX_MAGNITUDE = 1e6  # with a 1e-9 tolerance, integers up to here stay apart
_MAX_CANCELLATION = 1e4  # a result this much smaller than its largest intermediate lost its digits
_ATOM_START = {"(", "{", "[", "\\frac", "\\sqrt", "\\pi", *_FUNCTIONS}


class _Unsupported(Exception):
    pass


class _Parser:
    """Recursive descent over tokens; evaluates as it parses (no tree needed)."""

    def __init__(self, tokens: list[str], env: dict[str, complex]) -> None:
        self.tokens, self.pos, self.env = tokens, 0, env
        self.peak = 0.0  # the largest magnitude met on the way: cancellation makes floats unreliable

    def seen(self, value: complex) -> complex:
        self.peak = max(self.peak, abs(value))
        return value

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise _Unsupported(f"expected {expected!r}, got {tok!r}")
        self.pos += 1
        return tok

    def expr(self) -> complex:
        value = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            rhs = self.term()
            value = self.seen(value + rhs if op == "+" else value - rhs)
        return value

    def term(self) -> complex:
        value = self.unary()
        after_slash = False
        while True:
            tok = self.peek()
            if tok in ("*", "\\cdot", "\\times", "/"):
                self.take()
                rhs = self.unary()
                after_slash = tok == "/"
                if after_slash:
                    if rhs == 0:
                        raise _Unsupported("division by zero")
                    value = self.seen(value / rhs)
                else:
                    value = self.seen(value * rhs)
            elif tok is not None and (tok in _ATOM_START or _is_number(tok) or _is_letter(tok)):
                if after_slash:  # "1/2x": (1/2)x or 1/(2x)? Leave it to math-verify.
                    raise _Unsupported("implicit product after a division")
                value = self.seen(value * self.power())
            else:
                return value

    def unary(self) -> complex:
        if self.peek() == "-":
            self.take()
            return -self.unary()
        if self.peek() == "+":
            self.take()
            return self.unary()
        return self.power()

    def power(self) -> complex:
        return self.seen(self._power())

    def _power(self) -> complex:
        base = self.atom()
        if self.peek() == "^":
            self.take()
            exponent = self.group()
            if self.peek() == "^":
                raise _Unsupported("stacked exponents")
            if abs(exponent) > _MAX_EXPONENT:
                raise _Unsupported("exponent too large")
            if base == 0 and exponent.real <= 0:
                raise _Unsupported("0 to a non-positive power")
            if exponent.imag == 0 and exponent.real == int(exponent.real):
                return base ** int(exponent.real)
            return cmath.exp(exponent * cmath.log(base)) if base != 0 else 0j
        return base

    def group(self) -> complex:
        """A braced group, or the single next character (``\\frac12``, ``x^2``)."""
        tok = self.peek()
        if tok == "{":
            self.take()
            value = self.expr()
            self.take("}")
            return value
        if tok is not None and _is_number(tok):
            self.take()
            if len(tok) > 1:  # "\frac12" tokenizes "12": split off the first digit
                if "." in tok:
                    raise _Unsupported("decimal without braces")
                self.tokens.insert(self.pos, tok[1:])
                tok = tok[0]
            return complex(float(tok))
        if tok is not None and (_is_letter(tok) or tok == "\\pi"):
            return self.atom()
        raise _Unsupported(f"bad group start {tok!r}")

    def atom(self) -> complex:
        tok = self.take()
        if _is_number(tok):
            return complex(float(tok))
        if _is_letter(tok):
            return self.env[tok]
        if tok == "\\pi":
            return complex(math.pi)
        if tok == "(":
            value = self.expr()
            self.take(")")
            return value
        if tok in ("{", "["):
            value = self.expr()
            self.take("}" if tok == "{" else "]")
            return value
        if tok in _FUNCTIONS:
            if self.peek() not in ("(", "{"):
                raise _Unsupported("function without parentheses")  # "\\sin 2x" is ambiguous
            argument = self.atom()
            if tok == "\\ln" and argument == 0:
                raise _Unsupported("log of zero")
            return _FUNCTIONS[tok](argument)
        if tok == "\\frac":
            num = self.group()
            den = self.group()
            if den == 0:
                raise _Unsupported("division by zero")
            return num / den
        if tok == "\\sqrt":
            if self.peek() == "[":
                self.take()
                index = self.expr()
                self.take("]")
                if index == 0 or abs(index) > _MAX_EXPONENT:
                    raise _Unsupported("bad root index")
                radicand = self.group()
                return radicand ** (1 / index) if radicand != 0 else 0j
            return cmath.sqrt(self.group())
        raise _Unsupported(f"unsupported token {tok!r}")


def _is_number(tok: str) -> bool:
    return tok[0].isdigit() or (tok[0] == "." and len(tok) > 1)


def _is_letter(tok: str) -> bool:
    return _VARIABLE_RE.fullmatch(tok) is not None


def _tokens(text: str) -> list[str] | None:
    # E_{1} and E_1 are one variable
    tokens = [t.replace("{", "").replace("}", "") if "_" in t else t for t in _TOKEN_RE.findall(text)]
    for tok in tokens:
        if len(tok) == 1 and not (tok.isascii() and (tok.isalnum() or tok in "-+*/^(){}[]")):
            return None
        if tok.startswith("\\") and tok not in _COMMANDS and not _is_letter(tok):
            return None
    return tokens


def _variables(tokens: list[str]) -> set[str]:
    return {t for t in tokens if _is_letter(t)}


def evaluate(text: str, env: dict[str, complex]) -> complex | None:
    """The value of ``text`` with letters bound by ``env``, or None outside the supported grammar."""
    tokens = _tokens(text)
    if not tokens or len(tokens) > 200:
        return None
    parser = _Parser(tokens, env)
    try:
        value = parser.expr()
        if parser.peek() is not None:
            return None
    except (_Unsupported, KeyError, ZeroDivisionError, OverflowError, ValueError):
        return None
    if not cmath.isfinite(value) or parser.peak > _MAX_MAGNITUDE:
        return None
    if parser.peak > _MAX_CANCELLATION * max(abs(value), 1e-300) and parser.peak > 1e-6:
        return None
    return value


def compare_expressions(gold: str, pred: str, rel_tol: float) -> bool | None:
    """True / False when both sides evaluate (at three random points), None when either does not."""
    tokens_g, tokens_p = _tokens(gold), _tokens(pred)
    if not tokens_g or not tokens_p:
        return None
    if _WORD_RE.search(gold) or _WORD_RE.search(pred):
        return None  # a word is likely a unit or a name: math-verify decides
    # A variable on one side only still gives a sound answer: both are functions of the union.
    names = sorted(_variables(tokens_g) | _variables(tokens_p))
    constants = {"e": complex(math.e), "i": 1j}
    rng = random.Random(0x5EED)
    decimal_literal = any("." in t for t in tokens_g + tokens_p)
    # Exact forms must agree to rounding error; a written decimal only to the configured tolerance.
    tol = max(rel_tol, 1e-9) if decimal_literal else 1e-9
    rounds = 3 if any(n not in constants for n in names) else 1
    for _ in range(rounds):
        env = {n: constants.get(n, complex(rng.uniform(0.35, 0.95))) for n in names}
        a, b = evaluate(gold, env), evaluate(pred, env)
        if a is None or b is None:
            return None
        if abs(a - b) > tol * max(abs(a), abs(b), 1e-12):
            return False
    return True
