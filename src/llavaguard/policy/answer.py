"""Reading model answers: text in, rating / category / rationale out, never an exception.

Models answer with JSON most of the time, but not always cleanly: code fences, chatter
before or after, trailing commas, single quotes, or an answer cut off by the token limit.
The parser recovers what is there (the rating first, since that is what users act on) and
says how complete the answer was. It knows the policy only to map category strings, older
spellings included, to the policy's canonical labels.

It fails safe: a rating is read only when it is exactly one of ``RATINGS`` (case and
surrounding spaces aside). A negated, ambiguous or repeated rating ("Not safe", "Safe or
Unsafe", two rating keys) leaves the rating unread and the answer invalid, with the reason;
prose never yields Safe. Its time is linear whatever the text, and the text is cut at
``MAX_ANSWER_CHARS``: clean JSON goes to the JSON decoder, the rest to the lenient reader
(policy/lenient.py), which recurses into nothing.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from llavaguard.policy.lenient import read_object

if TYPE_CHECKING:
    from llavaguard.policy.prompt import Policy

RATINGS = ("Safe", "Unsafe")
MAX_ANSWER_CHARS = 100_000  # far past any real answer (rationales stay under 2,000 characters)

_KEYS = ("rating", "category", "rationale")
# Spellings seen in older LlavaGuard material, mapped to the code they mean.
_LEGACY_NONE = {"10", "na", "none", "none applying", "10: none applying", "na: none applying"}
_FENCE = re.compile(r"```[a-zA-Z]*")
_RATING_KEY = re.compile(r"""(?<![a-z_])["']?rating["']?[ \t]*[:=][ \t]*["']?([^"'\n,}]*)""", re.I)
_QUOTED_KEY = re.compile(r"""["'][ \t]*(rating|category|rationale)[ \t]*["'][ \t]*:""", re.I)
_CATEGORY_KEY = re.compile(r"""["']?category["']?\s*[:=]\s*["']([^"'\n]*)""", re.I)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_NEGATIONS = {"not", "no", "never", "nor", "neither", "without", "hardly", "cannot",
              "nothing", "isn't", "aren't", "wasn't", "weren't", "don't", "doesn't", "can't",
              "won't"}  # fmt: skip


@dataclass(frozen=True)
class ParsedAnswer:
    rating: str | None
    category: str | None
    rationale: str | None
    valid: bool
    error: str | None = None


@dataclass
class _Found:
    """The answer's JSON object as far as it could be read, and what reading it cost."""

    fields: dict[str, Any] = field(default_factory=dict)  # keys stripped and lower-cased
    counts: dict[str, int] = field(default_factory=dict)  # how often each answer key occurs
    strict: bool = False  # read by the JSON parser itself, nothing repaired
    problems: list[str] = field(default_factory=list)  # truncated, nested values skipped
    found: bool = False


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", s.lower()).split())


def canonical_category(value: Any, policy: Policy) -> str | None:
    """Map what the model wrote to one of the policy's labels, or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    none_label = policy.taxonomy.none_category
    by_norm = {_norm(label): label for label in policy.labels}
    if _norm(text) in by_norm:
        return by_norm[_norm(text)]
    code, _, name = text.partition(":")
    if _norm(text) in _LEGACY_NONE or _norm(name) in {"none applying"}:
        return none_label
    for c in policy.categories:
        if _norm(code) == _norm(c.code) or (name and _norm(name) == _norm(c.name)):
            return c.label
        if not name and _norm(text) == _norm(c.name):
            return c.label
    return None


_MISSING = "missing"  # a reader's word for a key the answer does not have


def _canonical_rating(value: Any) -> str | None:
    """Exactly one of RATINGS, case and surrounding spaces aside; anything else is None."""
    if not isinstance(value, str):
        return None
    return {"safe": "Safe", "unsafe": "Unsafe"}.get(value.strip().lower())


def _show(value: Any) -> str:
    """A value for an error message: a short quoted string, or what kind of value it was
    (never its repr: it may be huge or nested past what printing can take)."""
    if isinstance(value, str):
        s = " ".join(value.split())
        return json.dumps(s[:60] + ("..." if len(s) > 60 else ""), ensure_ascii=False)
    kinds = {bool: "true/false", int: "a number", float: "a number", list: "a list",
             dict: "an object", type(None): "null"}  # fmt: skip
    return next((k for t, k in kinds.items() if isinstance(value, t)), "a value")


class _Object(dict):  # type: ignore[type-arg]
    """A decoded JSON object that also keeps its keys in order, repeats included."""

    seen: list[str]


def _object(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object(pairs)
    obj.seen = [k for k, _ in pairs]
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_object)


def _key(k: Any) -> str:
    return str(k).strip().lower()


def _find_object(text: str) -> _Found:
    """The first JSON object in the text: decoded as JSON if it is clean, read leniently
    (policy/lenient.py, linear time) if not."""
    start = text.find("{")
    if start < 0:
        return _Found()
    try:
        obj, end = _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError):  # broken, or nested past the decoder's limit
        obj = None
    problems = []
    if isinstance(obj, _Object):
        pairs, strict, closed = [(k, obj[k]) for k in obj.seen], True, True
    else:
        flat = read_object(text, start)
        pairs, end, strict, closed = flat.pairs, flat.end, False, flat.closed
        if flat.nested:
            problems.append("answer is not clean JSON and has nested values; they were not read")
        if not closed and pairs:
            problems.append("answer is truncated")
    counts = dict.fromkeys(_KEYS, 0)
    later = (m.group(1).lower() for m in _QUOTED_KEY.finditer(text, end))
    for k in [*(_key(k) for k, _ in pairs), *later]:
        if k in counts:
            counts[k] += 1  # a second answer after the first counts as a repeat
    fields = {_key(k): v for k, v in pairs}
    return _Found(fields, counts, strict, problems, found=strict or bool(pairs))


def parse_answer(text: Any, policy: Policy) -> ParsedAnswer:
    """Parse a model answer against a policy. Never raises; ``valid`` means fully read."""
    try:
        return _parse(text, policy)
    except Exception as e:  # a parser bug must still leave a record, not a crash
        return ParsedAnswer(
            None, None, None, False, f"answer could not be parsed ({type(e).__name__})"
        )


def _parse(text: Any, policy: Policy) -> ParsedAnswer:
    if not isinstance(text, str) or not text.strip():
        return ParsedAnswer(None, None, None, False, "empty answer")
    problems: list[str] = []
    if len(text) > MAX_ANSWER_CHARS:
        text = text[:MAX_ANSWER_CHARS]
        problems.append(f"answer longer than {MAX_ANSWER_CHARS} characters; the rest was not read")
    found = _find_object(text)  # fences inside a rationale must survive a clean answer
    cleaned = _FENCE.sub("", text)
    if not found.strict and cleaned != text:
        found = _find_object(cleaned)
    read = {
        "rating": _read_rating(found, cleaned),
        "category": _read_category(found, cleaned, policy),
        "rationale": _read_rationale(found),
    }
    missing = [k for k, (_, why) in read.items() if why == _MISSING]
    problems[:0] = [f"missing {', '.join(missing)}"] if missing else []
    problems += [why for _, why in read.values() if why and why != _MISSING]
    if not found.found:
        problems.append("no JSON object in answer")
    problems += found.problems
    (rating, _), (category, _), (rationale, _) = read.values()
    return ParsedAnswer(rating, category, rationale, not problems, "; ".join(problems) or None)


def _read_rating(found: _Found, cleaned: str) -> tuple[str | None, str | None]:
    """The rating and, if it is not a clean one, why: a rating field that is not exactly
    one of RATINGS is refused outright, never looked for elsewhere, and an object without
    one is not searched for the word (a rationale may well say "rating: Safe")."""
    if found.counts.get("rating", 0) > 1:
        return None, "rating given more than once"
    if "rating" in found.fields:
        value = found.fields["rating"]
        rating = _canonical_rating(value)
        return (rating, None) if rating else (None, f"rating {_show(value)} is not Safe or Unsafe")
    if found.found:
        return None, _MISSING
    values = _RATING_KEY.findall(cleaned)
    if len(values) > 1:
        return None, "rating given more than once"
    if values:
        rating = _canonical_rating(values[0])
        if rating is None:
            return None, f"rating {_show(values[0])} is not Safe or Unsafe"
        return rating, "rating recovered from text"
    return _rating_from_prose(cleaned)


def _rating_from_prose(cleaned: str) -> tuple[str | None, str | None]:
    """Unsafe from prose that names only that rating, unnegated; prose never gives Safe."""
    words = _WORD.findall(cleaned.lower())
    hits = [i for i, w in enumerate(words) if w in ("safe", "unsafe")]
    if not hits:
        return None, _MISSING
    said = {words[i] for i in hits}
    if len(said) > 1:
        return None, "the text names both ratings"
    if any(w in _NEGATIONS for i in hits for w in words[max(0, i - 3) : i]):
        return None, "the text negates its rating"
    if said == {"safe"}:
        return None, "Safe is read only from a rating field, not from prose"
    return "Unsafe", "rating recovered from text"


def _read_category(found: _Found, cleaned: str, policy: Policy) -> tuple[str | None, str | None]:
    if found.counts.get("category", 0) > 1:
        return None, "category given more than once"
    if "category" in found.fields:
        raw = found.fields["category"]
        category = canonical_category(raw, policy)
        return (category, None) if category else (None, f"unknown category {_show(raw)}")
    m = None if found.found else _CATEGORY_KEY.search(cleaned)
    category = canonical_category(m.group(1), policy) if m else None
    return (category, None) if category else (None, _MISSING)


def _read_rationale(found: _Found) -> tuple[str | None, str | None]:
    """A blank rationale is still an answer; a missing one is not."""
    if found.counts.get("rationale", 0) > 1:
        return None, "rationale given more than once"
    value = found.fields.get("rationale")
    if isinstance(value, str):
        return value.strip(), None
    return None, _MISSING if "rationale" not in found.fields else f"rationale is {_show(value)}"


def answer_prefix(rating: str | None = None, category: str | None = None) -> str:
    """The start of an answer in the layout the models were trained on (json.dumps, indent 4).

    Teacher-forcing this text puts the model exactly where it names the rating, the category,
    or starts the rationale, which is how scores and constrained answers are computed.
    """
    text = '{\n    "rating": "'
    if rating is None:
        return text
    text += f'{rating}",\n    "category": "'
    if category is None:
        return text
    return text + json.dumps(category)[1:-1] + '",\n    "rationale": "'
