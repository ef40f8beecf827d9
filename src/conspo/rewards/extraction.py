"""Pull the final answer out of a model response: last ``\\boxed{}``, "final answer is", "####", fallback.

Everything here is pure Python, linear in the response length and safe on any input: it runs in the
trainer's process, before anything is sent to a verifier worker.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["extract_answer", "extract_boxed", "judged_text", "ThinkMode", "Fallback"]

ThinkMode = Literal["auto", "after", "ignore"]
Fallback = Literal["last_number", "none"]

THINK_MODES = ("auto", "after", "ignore")
FALLBACKS = ("last_number", "none")

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BRACE_RE = re.compile(r"\\.|[{}]", re.DOTALL)
# "The final answer is $x$", "Answer: 12", "the answer is 5." (last occurrence wins).
_ANSWER_RE = re.compile(
    r"(?:final\s+answer|\banswer)\s*(?:is\b|:)[ \t]*(?:\$\s*)?([^\n]{1,300})", re.IGNORECASE
)
_HASH_RE = re.compile(r"^[ \t]*####[ \t]*([^\n]{1,300})", re.MULTILINE)
_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")
_MAX_ANSWER_CHARS = 20_000


def judged_text(text: str, think: ThinkMode = "auto") -> str | None:
    """The part of ``text`` that is judged, given how ``<think>...</think>`` is handled.

    ``"after"``: only what follows the last ``</think>``; None when there is none (the model never
    finished thinking). ``"auto"``: the same when a ``</think>`` is present, else the whole text.
    ``"ignore"``: the whole text.
    """
    if think not in THINK_MODES:
        raise ValueError(f"think={think!r}: expected one of {THINK_MODES}")
    if think == "ignore":
        return text
    cut = text.rfind("</think>")
    if cut < 0:
        return None if think == "after" else text
    return text[cut + len("</think>") :]


def _matching_brace(text: str, open_pos: int) -> int:
    """Index of the brace closing the one at ``open_pos`` (escaped ``\\{``/``\\}`` skipped), or -1."""
    depth = 0
    for m in _BRACE_RE.finditer(text, open_pos):
        tok = m.group()
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth == 0:
                return m.start()
    return -1


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` / ``\\fbox{...}`` whose braces balance, or None.

    ``\\boxed 5`` (no braces) yields ``5``. An unbalanced last box falls back to the previous one.
    Cost is linear in ``len(text)`` however many boxes or nested braces it holds.
    """
    starts = [m.end() for m in _BOX_RE.finditer(text)]
    if not starts:
        return None
    # Closing position of every balanced "{" in one pass, so many unbalanced boxes stay linear.
    closes: dict[int, int] = {}
    need = set()
    for end in starts:
        j = end
        while j < len(text) and text[j] in " \t":
            j += 1
        need.add(j)
    stack: list[int] = []
    first = min(need)
    for m in _BRACE_RE.finditer(text, first):
        tok = m.group()
        if tok == "{":
            stack.append(m.start())
        elif tok == "}" and stack:
            opened = stack.pop()
            if opened in need:
                closes[opened] = m.start()
    for end in reversed(starts):
        j = end
        while j < len(text) and text[j] in " \t":
            j += 1
        if j < len(text) and text[j] == "{":
            close = closes.get(j)
            if close is None:
                continue
            return text[j + 1 : close].strip()[:_MAX_ANSWER_CHARS]
        if j > end:  # "\boxed 5": the next token
            token = re.match(r"[^\s$]+", text[j : j + 300])
            if token:
                return token.group().rstrip(".,;")
    return None


def _clean_inline(answer: str) -> str:
    """Strip the math delimiters and punctuation around an answer written in running text."""
    ans = answer.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if ans.startswith(left):
            ans = ans[len(left) :]
            end = ans.find(right)
            if end >= 0:
                ans = ans[:end]
            break
    else:
        dollar = ans.find("$")
        if dollar > 0:
            ans = ans[:dollar]
        # "204. I hope it is correct.": the sentence ends at a period followed by a space.
        ans = re.split(r"\.\s", ans, maxsplit=1)[0]
    return ans.strip().rstrip(".").strip()


def extract_answer(
    text: object, *, think: ThinkMode = "auto", fallback: Fallback = "last_number"
) -> str | None:
    """The final answer in a model response, or None when there is none.

    Order: the last ``\\boxed{}``/``\\fbox{}`` with balanced braces; then "final answer is ..." /
    "answer: ..."; then a ``#### ...`` line (GSM8K); then ``fallback`` (``"last_number"``: the last number
    in the judged text; ``"none"``: nothing). ``think`` picks the judged text (see :func:`judged_text`).
    Never raises on bad input: a non-string or empty response gives None. An empty box gives None too.

    >>> extract_answer("so x = 2, hence \\\\boxed{\\\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    >>> extract_answer("<think>maybe 3</think> The answer is $4$.")
    '4'
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback={fallback!r}: expected one of {FALLBACKS}")
    if not isinstance(text, str) or not text:
        return None
    judged = judged_text(text, think)
    if not judged:
        return None
    if "\\boxed" in judged or "\\fbox" in judged:
        boxed = extract_boxed(judged)
        if boxed is not None:
            return boxed or None
    hits = list(_ANSWER_RE.finditer(judged))
    if hits:
        ans = _clean_inline(hits[-1].group(1))
        if ans:
            return ans
    hits = list(_HASH_RE.finditer(judged))
    if hits:
        ans = _clean_inline(hits[-1].group(1))
        if ans:
            return ans
    if fallback == "last_number":
        # Only the tail: a final number sits near the end, and a 1 MB response must stay cheap.
        tail = judged[-2000:]
        numbers = _NUMBER_RE.findall(tail)
        if numbers:
            return numbers[-1]
    return None
