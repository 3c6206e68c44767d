"""A lenient reader of the one flat JSON object a model answer should be, in linear time.

Models break their JSON in a few ways: a trailing comma, single quotes, a quote left unescaped
inside the rationale, a missing comma between lines, an answer cut off by the token limit.
json_repair mends all of these and much more, but its time grows with the square of odd input
(json_repair 0.64: 4,000 characters of ``{,0}`` repeated take 9 s; 100,000 nested braces took
224 s and an unterminated 1 MB rationale 44 s), and a model's answer is text that an image can
steer. This reader mends only what answers need, in one pass, never recursing: a value that is
itself an object or a list is skipped (an answer's values are strings), and a string runs to
the first quote of its kind that is followed by a separator, so inner quotes and apostrophes
stay in it.

It knows nothing of ratings or categories; policy/answer.py judges what it reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

NESTED = "<nested>"  # what a skipped object or list value reads as; never a rating or label

_SKIP = re.compile(r"[\s,]*+")
_SPACE = re.compile(r"\s*+")
# A quote closes its string when a separator, the end, or a new line with a key follows it.
_CLOSER = r"""(?:\s*+(?:[,:}\]]|$)|[ \t]*+\r?\n\s*+["'])"""
_STRINGS = {
    q: re.compile(rf"{q}((?:[^{q}\\]++|\\.|{q}(?!{_CLOSER}))*+)({q}?)", re.S) for q in "\"'"
}
_BARE_KEY = re.compile(r"[^,:{}\[\]\n]++")
_BARE_VALUE = re.compile(r"[^,{}\[\]\n]++")
_STRUCTURE = re.compile(r'\\.|["{}\[\]]', re.S)
_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.S)
_SIMPLE = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


@dataclass
class FlatObject:
    """The pairs of an object in order, repeated keys included; where it ended; whether its
    closing brace was there; whether a value (or key) was nested and skipped."""

    pairs: list[tuple[str, Any]] = field(default_factory=list)
    end: int = 0
    closed: bool = False
    nested: bool = False


def read_object(text: str, start: int) -> FlatObject:
    """The object whose opening brace is at ``start``. Every step consumes text, so the
    time is linear in what is read."""
    out = FlatObject()
    n, i = len(text), start + 1
    while True:
        i = _SKIP.match(text, i).end()
        if i >= n or text[i] == "}":
            out.end, out.closed = min(i + 1, n), i < n
            return out
        key, i = _value(text, i, _BARE_KEY)
        i = _SPACE.match(text, i).end()
        if i < n and text[i] in ":=":
            i = _SPACE.match(text, i + 1).end()
        value = None
        if i < n and text[i] not in ",}":
            value, i = _value(text, i, _BARE_VALUE)
        out.nested = out.nested or NESTED in (key, value)
        if isinstance(key, str) and key != NESTED:
            out.pairs.append((key, value))


def _value(text: str, i: int, bare: re.Pattern[str]) -> tuple[str | None, int]:
    """One key or value at ``i``: a string, a skipped nested value, or a bare word."""
    c = text[i]
    if c in "\"'":
        m = _STRINGS[c].match(text, i)
        return (_unescape(m.group(1)) if c == '"' else m.group(1)), m.end()
    if c in "{[":
        return NESTED, _skip_nested(text, i)
    m = bare.match(text, i)
    if m is None:
        return None, i + 1  # a stray ':' or ']': step over it
    return m.group().strip(), m.end()


def _skip_nested(text: str, i: int) -> int:
    """Where the bracketed value at ``i`` ends (the end of the text if it never does)."""
    depth, in_string = 0, False
    for m in _STRUCTURE.finditer(text, i):
        token = m.group()
        if token[0] == "\\":
            continue
        if token == '"':
            in_string = not in_string
        elif in_string:
            continue
        elif token in "{[":
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                return m.end()
    return len(text)


def _unescape(s: str) -> str:
    """JSON escapes decoded; surrogate pairs joined, lone halves replaced (they could not be
    written as UTF-8 later)."""
    if "\\" not in s:
        return s
    out = _ESCAPE.sub(
        lambda m: chr(int(m[1][1:], 16)) if len(m[1]) == 5 else _SIMPLE.get(m[1], m[1]), s
    )
    return out.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
