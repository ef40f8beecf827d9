"""Pull the final answer out of a model response, whichever of the usual formats it is written in.

Priority (the first rule that finds an answer wins; within one rule the last occurrence wins):

1. the last ``\\boxed{...}`` / ``\\fbox{...}`` whose braces balance;
2. Minerva's sentence ``Final Answer: The final answer is X. I hope it is correct.``;
3. an answer anchor, the rightmost of: "the (final / correct) answer is X", "the answer to ... is X",
   "the correct option / choice is X", ``**Answer:** X``, ``**Final Answer**`` / ``## Final Answer``
   headers, ``Answer: X`` / ``Final answer: X`` lines, a GSM8K ``#### X`` line. X may be inline or
   display math (``$..$`` ``\\(..\\)`` ``\\[..\\]`` ``$$..$$``, on the same line or the next ones), a
   choice letter, or plain text up to the end of its sentence;
4. the fallback (``"last_number"``: the last number of the tail, or the last math span when that number
   sits inside it; ``"none"``: nothing).

Everything here is pure Python, linear in the response length and safe on any input: it runs in the
trainer's process, before anything is sent to a verifier worker. Every regular expression is either a
literal-led anchor or a bounded span, so none can backtrack catastrophically.
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = [
    "MAX_ANSWER_CHARS",
    "extract_answer",
    "extract_boxed",
    "judged_text",
    "unwrap_whole",
    "ThinkMode",
    "Fallback",
]

ThinkMode = Literal["auto", "after", "ignore"]
Fallback = Literal["last_number", "none"]

THINK_MODES = ("auto", "after", "ignore")
FALLBACKS = ("last_number", "none")

MAX_ANSWER_CHARS = 4000
"""An extracted answer longer than this (after redundant outer braces are dropped) is refused with
``Reason.TOO_LONG`` instead of being checked (INFERRED: the longest gold answer in the shared benchmarks
is 210 characters; math-verify needs seconds on a few thousand)."""

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BRACE_RE = re.compile(r"\\.|[{}]", re.DOTALL)

# Minerva's few-shot sentence (lm-evaluation-harness minerva_math, Qwen2.5-Math's parser).
_MINERVA_RE = re.compile(r"final\s+answer\s+is\b", re.IGNORECASE)
_HOPE_RE = re.compile(r"\.?\s*I\s+hope\s+it\s+is\s+correct", re.IGNORECASE)

# Answer anchors; each is literal-led with bounded gaps, so finditer stays linear.
_ANCHOR_RE = re.compile(
    r"(?P<is>\b(?:final\s+|correct\s+|right\s+)?(?:answers?|choice|option)"
    r"(?:\s+to\s+[^.\n$]{1,80}?)?\s*(?:\*\*)?\s+(?:is|are|would\s+be|will\s+be|should\s+be)\b(?:\s*:)?)"
    r"|(?P<colon>\b(?:final\s+)?answer\s*(?:\*\*|__)?\s*[:：](?:\s*(?:\*\*|__))?)"
    r"|(?P<header>(?:\*\*|__)\s*final\s+answer\s*(?:\*\*|__)"
    r"|^[ \t]*#{1,6}[ \t]*(?:\*\*)?final\s+answer\b(?:\*\*)?[ \t]*[:：]?"
    r"|^[ \t]*final\s+answer[ \t]*[:：]?[ \t]*$)"
    r"|(?P<hash>^[ \t]*####)",
    re.IGNORECASE | re.MULTILINE,
)
_ANCHOR_KEYWORDS = ("answer", "choice", "option", "####")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_ANCHORS_TRIED = 8  # rightmost anchors tried before the fallback (a self-corrected response has a few)
_SKIP_RE = re.compile(r"(?:[\s:=*_]|\\(?:quad|qquad|,|;|!|\s)){0,200}")
_MATH_OPEN = ("$$", "\\[", "\\(", "$")
_OPENER_RE = re.compile(r"(?<!\\)\$\$?|\\\[|\\\(")
_FILLER_RE = re.compile(
    r"^(?:(?:therefore|thus|hence|so|then|clearly|simply|just|exactly|indeed),?\s+)+", re.I
)
_UNESCAPED_DOLLAR_RE = re.compile(r"(?<!\\)\$")
_CURRENCY_RE = re.compile(r"\d[\d,.]*\s+[A-Za-z]{2,}")
_MATH_CLOSE = {"$$": "$$", "\\[": "\\]", "\\(": "\\)", "$": "$"}
_JOINER_RE = re.compile(r"\s*(?:,\s*(?:and|or)\s|,|\band\b|\bor\b)\s*")
_SENTENCE_END_RE = re.compile(
    r"\.(?=\s|$)|\s+I\s+hope\b|(?<=\S)\s+(?:because|since|as|which|so|for|if|when|where|while)\s"
    r"|(?<=\S)\s+(?:and|but)\s+(?=[A-Za-z]{2,})",
    re.IGNORECASE,
)
_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?")
_ASSIGNED_OR_ARITH_RE = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?|[\d\s+\-*/().^]+|\\[a-zA-Z]+")
_TAIL_CHARS = 2000  # the fallback reads only the tail: a final number sits near the end


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
    Cost is linear in ``len(text)`` however many boxes or nested braces it holds. The content is
    returned whole (the caller refuses one longer than :data:`MAX_ANSWER_CHARS`, never cuts it).
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
            return _drop_outer_braces(text[j + 1 : close].strip())
        if j > end:  # "\boxed 5": the next token
            token = re.match(r"[^\s$]+", text[j : j + 300])
            if token:
                return token.group().rstrip(".,;")
    return None


def _drop_outer_braces(s: str) -> str:
    """``{{5}}`` -> ``5`` when the outer pairs enclose everything (linear: one scan per candidate depth)."""
    k = 0
    while k < len(s) // 2 and s[k] == "{" and s[-1 - k] == "}":
        k += 1
    while k > 0:
        inner, depth, ok = s[k:-k], 0, True
        for m in _BRACE_RE.finditer(inner):
            depth += {"{": 1, "}": -1}.get(m.group(), 0)
            if depth < 0:
                ok = False
                break
        if ok and depth == 0:
            return inner.strip()
        k = 0 if k == 1 else 1  # unbalanced inside: retry with one pair, then give up
    return s


def _math_span(text: str, pos: int) -> tuple[str, int] | None:
    """``(content, end)`` of the math span opening at ``pos`` (``$$ \\[ \\( $``), or None.

    Inline ``$`` and ``\\(`` close on the same line; display math may span lines (bounded).
    A ``$`` that does not close on its line is a currency sign, not math.
    """
    for opener in _MATH_OPEN:
        if text.startswith(opener, pos):
            break
    else:
        return None
    closer = _MATH_CLOSE[opener]
    start = pos + len(opener)
    limit = start + MAX_ANSWER_CHARS + 2
    if opener in ("$", "\\("):
        newline = text.find("\n", start, limit)
        limit = newline if newline >= 0 else limit
    j = start
    while True:
        end = text.find(closer, j, limit)
        if end < 0:
            return None
        if closer == "$" and end > 0 and text[end - 1] == "\\":  # "\$" inside math is a dollar sign
            j = end + 1
            continue
        if closer == "$" and text.startswith("$$", end):  # "$x$$" is not a closer we can trust
            return None
        content = text[start:end]
        if opener == "$" and _CURRENCY_RE.match(content):
            return None  # "$12 and the rest is $5": two currency signs, not math
        return content, end + len(closer)


def _math_spans(text: str) -> list[tuple[int, int, str]]:
    """Every math span ``(start, end, content)`` left to right (an unclosed ``$`` is skipped)."""
    spans = []
    pos = 0
    while True:
        m = _OPENER_RE.search(text, pos)
        if m is None:
            return spans
        span = _math_span(text, m.start())
        if span is None:
            pos = m.end()
            continue
        spans.append((m.start(), span[1], span[0]))
        pos = span[1]


def _value_after(text: str, pos: int, header: bool, whole: bool = False) -> str | None:
    """The answer written after an anchor ending at ``pos``: math span(s), a letter, or a sentence."""
    skip = _SKIP_RE.match(text, pos)
    j = skip.end() if skip else pos
    # Math spans, joined when the answer is a list of them ("$2$ and $3$").
    spans: list[str] = []
    k = j
    while len(spans) < 10:
        span = _math_span(text, k)
        if span is None:
            break
        spans.append(span[0])
        k = span[1]
        joiner = _JOINER_RE.match(text, k)
        if joiner is None or joiner.end() >= len(text) or text[joiner.end()] not in "$\\":
            break
        k = joiner.end()
    if spans:
        return ", ".join(s.strip() for s in spans)
    if text.startswith("\\boxed", j) or text.startswith("\\fbox", j):
        return extract_boxed(text[j : j + MAX_ANSWER_CHARS + 20])
    line_end = text.find("\n", j, j + MAX_ANSWER_CHARS)
    line = text[j : line_end if line_end >= 0 else j + MAX_ANSWER_CHARS]
    if not line.strip():
        return None
    # "is therefore $5$" / "is the area $12$": a few words, then the math.
    for opener in ("$$", "\\[", "\\(", "$"):
        at = line.find(opener)
        if 0 < at <= 60 and re.fullmatch(r"[A-Za-z ,]*", line[:at]):
            span = _math_span(text, j + at)
            if span is not None:
                return span[0].strip()
    line = _FILLER_RE.sub("", line)  # "is thus 5." / "is simply 5"
    if line.startswith("$") and not line.startswith("$$"):
        line = line[1:]  # "$57,500." : a currency sign that does not close
    cut = None if whole else _SENTENCE_END_RE.search(line)  # Minerva's X runs up to "I hope"
    if cut:
        line = line[: cut.start()]
    dollar = _UNESCAPED_DOLLAR_RE.search(line)
    if dollar and dollar.start() > 0:  # "12 $\text{cm}$": the value before the math
        line = line[: dollar.start()]
    return line


_WHOLE_WRAPPER_RE = re.compile(r"\\(?:mathbf|textbf|boldsymbol|bm|mathrm|text|textrm|boxed|fbox)\s*\{")


def unwrap_whole(answer: str) -> str:
    """``\\mathbf{\\frac{1}{2}}`` -> ``\\frac{1}{2}``: drop a bold/text/box wrapper around the whole answer."""
    for _ in range(4):
        m = _WHOLE_WRAPPER_RE.match(answer)
        if m is None or not answer.endswith("}"):
            return answer
        close = _matching_brace(answer, m.end() - 1)
        if close != len(answer) - 1:
            return answer
        answer = answer[m.end() : close].strip()
    return answer


def _clean(answer: str | None) -> str | None:
    """Strip markdown emphasis, delimiters and trailing punctuation around an extracted answer."""
    if answer is None:
        return None
    ans = answer.strip()
    for _ in range(3):
        before = ans
        ans = ans.strip().strip("*_`").strip()
        if ans.startswith("$") and ans.endswith("$") and len(ans) > 1:
            ans = ans.strip("$")
        for left, right in (("\\(", "\\)"), ("\\[", "\\]")):
            if ans.startswith(left) and ans.endswith(right):
                ans = ans[len(left) : -len(right)]
        ans = ans.rstrip(".,;:").strip()  # not "!": 5! is a factorial
        ans = unwrap_whole(ans)
        if ans == before:
            break
    return ans or None


def _wordy(answer: str) -> bool:
    """A sentence rather than an answer: many words, no digit, no LaTeX, no relation."""
    if re.search(r"[\d\\=^_{}()+/]", answer):
        return False
    return len(answer.split()) > 4


def _lowered(text: str) -> str:
    """``text`` lower-cased with every index kept (str.lower can change the length of some letters)."""
    low = text.lower()
    return low if len(low) == len(text) else text.translate(_ASCII_LOWER)


def _last_hits(low: str, needle: str, k: int) -> list[int]:
    """Start of the last ``k`` occurrences of ``needle`` (str.rfind: C speed on a 1 MB text)."""
    hits, end = [], len(low)
    while len(hits) < k:
        pos = low.rfind(needle, 0, end)
        if pos < 0:
            break
        hits.append(pos)
        end = pos
    return hits


def _anchors(judged: str, low: str) -> list[re.Match]:
    """The rightmost answer anchors, rightmost first. Keywords are found by rfind, and the anchor
    regex runs only in a small window around each, so a 1 MB response costs a few string scans."""
    found: dict[int, re.Match] = {}
    for keyword in _ANCHOR_KEYWORDS:
        for pos in _last_hits(low, keyword, 4 * _ANCHORS_TRIED):
            line_start = judged.rfind("\n", max(0, pos - 64), pos) + 1
            start = min(max(0, pos - 16), line_start if line_start > 0 else max(0, pos - 64))
            for m in _ANCHOR_RE.finditer(judged, start, min(len(judged), pos + len(keyword) + 120)):
                if m.start() <= pos < m.end():
                    found.setdefault(m.start(), m)
    return [found[k] for k in sorted(found, reverse=True)[:_ANCHORS_TRIED]]


def _from_anchors(judged: str) -> str | None:
    low = _lowered(judged)
    # Minerva's sentence first: its X ends exactly before "I hope it is correct".
    for pos in _last_hits(low, "final answer", _ANCHORS_TRIED):
        m = _MINERVA_RE.match(judged, pos)
        if m is None:
            continue
        hope = _HOPE_RE.search(judged, m.end(), m.end() + MAX_ANSWER_CHARS)
        if hope is None or "\n\n" in judged[m.end() : hope.start()]:
            continue
        value = _value_after(judged[m.end() : hope.start()] + "\n", 0, header=False, whole=True)
        ans = _clean(value)
        if ans:
            return ans
    for m in _anchors(judged, low):
        ans = _clean(_value_after(judged, m.end(), header=m.lastgroup == "header"))
        if ans and not _wordy(ans):
            return ans
    return None


def _span_value(content: str) -> str | None:
    """A math span read as an answer: ``x = \\frac12`` and ``2+3=5`` give the right side."""
    if "=" in content:
        left, right = content.rsplit("=", 1)
        if right.strip() and _ASSIGNED_OR_ARITH_RE.fullmatch(left.strip()):
            content = right
    return _clean(content)


def _last_number_or_math(judged: str) -> str | None:
    """The fallback: the last number in the tail, or the whole math span that holds it; or the math
    span alone on the last line ("we find $SRAC=LRAC$." after numbers on earlier lines)."""
    tail = judged[-_TAIL_CHARS:]
    cut = tail.find("\n") if len(judged) > _TAIL_CHARS else -1
    if 0 <= cut < len(tail) // 2:  # start on a line boundary, so math spans pair up
        tail = tail[cut + 1 :]
    numbers = list(_NUMBER_RE.finditer(tail))
    spans = _math_spans(tail)
    last_line = tail.rstrip().rfind("\n") + 1
    if spans and spans[-1][0] >= last_line and (not numbers or numbers[-1].end() <= last_line):
        return _span_value(spans[-1][2].strip())
    if not numbers:
        return None
    last = numbers[-1]
    # The math span around the last number: "so $x = \\frac{1}{2}$." gives \\frac{1}{2}, not 2.
    for start, end, content in reversed(spans):
        if start < last.start() and last.end() <= end:
            return _span_value(content.strip())
        if end <= last.start():
            break
    return last.group()


def extract_answer(
    text: object, *, think: ThinkMode = "auto", fallback: Fallback = "last_number"
) -> str | None:
    """The final answer in a model response, or None when there is none.

    Order (see the module docstring): the last balanced ``\\boxed{}``/``\\fbox{}``; Minerva's "Final
    Answer: The final answer is X. I hope it is correct."; the rightmost answer anchor ("the answer
    is", ``**Answer:**``, ``**Final Answer**``, ``Answer:``, ``####``) with the math, letter or
    sentence after it; then ``fallback``. ``think`` picks the judged text (see :func:`judged_text`).
    Never raises on bad input: a non-string or empty response gives None. An empty box gives None too.
    The answer is returned whole; :class:`~conspo.rewards.MathVerifier` refuses one longer than
    :data:`MAX_ANSWER_CHARS`.

    >>> extract_answer("so x = 2, hence \\\\boxed{\\\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    >>> extract_answer("<think>maybe 3</think> The answer is $4$.")
    '4'
    >>> extract_answer("Final Answer: The final answer is $12$. I hope it is correct.")
    '12'
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
            return _clean(boxed) if boxed.strip() else None
    ans = _from_anchors(judged)
    if ans:
        return ans
    if fallback == "last_number":
        return _last_number_or_math(judged)
    return None
