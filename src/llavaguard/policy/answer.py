"""Reading model answers: text in, rating / category / rationale out, never an exception.

Models answer with JSON most of the time, but not always cleanly: code fences, chatter
before or after, trailing commas, single quotes, or an answer cut off by the token limit.
The parser recovers what is there (the rating first, since that is what users act on) and
says how complete the answer was. It knows the policy only to map category strings, older
spellings included, to the policy's canonical labels.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llavaguard.policy.prompt import Policy

RATINGS = ("Safe", "Unsafe")

# Spellings seen in older LlavaGuard material, mapped to the code they mean.
_LEGACY_NONE = {"10", "na", "none", "none applying", "10: none applying", "na: none applying"}
_FENCE = re.compile(r"```[a-zA-Z]*")
_RATING_KEY = re.compile(r"""["']?rating["']?\s*[:=]\s*["']?\s*(unsafe|safe)\b""", re.I)
_CATEGORY_KEY = re.compile(r"""["']?category["']?\s*[:=]\s*["']([^"'\n]*)""", re.I)
_BARE = re.compile(r"\b(unsafe|safe)\b", re.I)


@dataclass(frozen=True)
class ParsedAnswer:
    rating: str | None
    category: str | None
    rationale: str | None
    valid: bool
    error: str | None = None


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


def _canonical_rating(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    v = value.strip().strip(".").lower()
    return {"safe": "Safe", "unsafe": "Unsafe"}.get(v)


def _find_object(text: str) -> tuple[dict[str, Any] | None, bool]:
    """The first JSON object in the text: (object, parsed strictly and completely)."""
    start = text.find("{")
    if start < 0:
        return None, False
    try:
        obj, _ = json.JSONDecoder().raw_decode(text, start)
        if isinstance(obj, dict):
            return obj, True
    except ValueError:
        pass
    try:
        import json_repair

        obj = json_repair.loads(text[start:])
    except Exception:  # the repair library must never take the parser down
        return None, False
    if isinstance(obj, list):
        obj = next((o for o in obj if isinstance(o, dict)), None)
    return (obj if isinstance(obj, dict) and obj else None), False


def parse_answer(text: Any, policy: Policy) -> ParsedAnswer:
    """Parse a model answer against a policy. Never raises; ``valid`` means fully read."""
    try:
        return _parse(text, policy)
    except Exception as e:  # a parser bug must still leave a record, not a crash
        return ParsedAnswer(None, None, None, False, f"answer could not be parsed ({e!r})")


def _parse(text: Any, policy: Policy) -> ParsedAnswer:
    if not isinstance(text, str) or not text.strip():
        return ParsedAnswer(None, None, None, False, "empty answer")
    obj, strict = _find_object(text)  # fences inside a rationale must survive a clean answer
    cleaned = _FENCE.sub("", text)
    if not strict:
        obj, strict = _find_object(cleaned)
    problems: list[str] = []
    rating = category = rationale = None
    complete = False
    if obj is not None:
        fields = {str(k).strip().lower(): v for k, v in obj.items()}
        rating = _canonical_rating(fields.get("rating"))
        raw_category = fields.get("category")
        category = canonical_category(raw_category, policy)
        if raw_category is not None and category is None:
            problems.append(f"unknown category {str(raw_category)[:80]!r}")
        r = fields.get("rationale")
        rationale = r.strip() if isinstance(r, str) else None
        # Repaired JSON (quotes, commas) counts as read; an object never closed was cut off.
        complete = strict or "}" in cleaned[cleaned.find("{") :]
        if not complete:
            problems.append("answer is truncated")
    else:
        problems.append("no JSON object in answer")
    if rating is None:
        m = _RATING_KEY.search(cleaned)
        if m:
            rating = _canonical_rating(m.group(1))
        else:
            found = {w.lower() for w in _BARE.findall(cleaned)}
            if len(found) == 1:
                rating = _canonical_rating(found.pop())
        if rating is not None:
            problems.append("rating recovered from text")
    if category is None and obj is None:
        m = _CATEGORY_KEY.search(cleaned)
        category = canonical_category(m.group(1), policy) if m else None
    missing = [
        n
        for n, v in (("rating", rating), ("category", category), ("rationale", rationale))
        if v is None  # a blank rationale is still an answer; a missing one is not
    ]
    if missing:
        problems.insert(0, "missing " + ", ".join(missing))
    valid = not missing and complete
    if valid:
        problems = []
    return ParsedAnswer(rating, category, rationale, valid, "; ".join(problems) or None)


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
