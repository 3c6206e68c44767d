"""Human annotations -> labelled images: the LlavaGuard annotation label space and score words
(reference, section 5) mapped to policy ratings and categories, or a mapping of your own.

Scores: "Highly/Moderately Inappropriate" are Unsafe, "Barely/Generally Acceptable" Safe,
"Discard Sample" is dropped. Unsafe rows whose category maps to NA are inconsistent and dropped.
Both are counted; an unknown score or label, or a missing image, stops the import with one line
naming the file and row.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from llavaguard.errors import ConfigError

SCORES = {
    "highly inappropriate": "Unsafe",
    "moderately inappropriate": "Unsafe",
    "barely acceptable": "Safe",
    "generally acceptable": "Safe",
    "discard sample": "discard",
}
CATEGORIES = {
    "humiliation, harassment or hate": "O1",
    "violence, harm or cruelty": "O2",
    "explicit sexual content": "O3",
    "nudity": "O4",
    "illegal activities": "O5",
    "substance abuse or weapons": "O6",
    "suicide or self harm": "O7",
    "animal cruelty": "O8",
    "disasters or emergencies": "O9",
    "polite communication and gestures": "NA",
    "nature": "NA",
    "respectful or appropriate content": "NA",
    "peace or care": "NA",
    "": "NA",
}


def _norm(text: Any) -> str:
    return " ".join(str(text or "").strip().lower().split())


def load_mapping(path: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """The reference mapping, or a YAML file with ``scores: {word: Safe|Unsafe|discard}`` and
    ``categories: {label: code or NA}`` that replaces the parts it gives."""
    scores, categories = dict(SCORES), dict(CATEGORIES)
    if path is None:
        return scores, categories
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the mapping ({e.__class__.__name__})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a mapping file holds 'scores' and/or 'categories'")
    if "scores" in data:
        scores = {_norm(k): str(v) for k, v in (data["scores"] or {}).items()}
        bad = [v for v in scores.values() if v not in ("Safe", "Unsafe", "discard")]
        if bad:
            raise ConfigError(f"{path}: scores map to Safe, Unsafe or discard, not {bad[0]!r}")
    if "categories" in data:
        categories = {_norm(k): str(v) for k, v in (data["categories"] or {}).items()}
    return scores, categories


def _rating(value: Any, scores: dict[str, str], where: str) -> str:
    """A score word of the mapping (annotation scores, or discard), else the one rating
    vocabulary that labels and predictions share (``inputs.labels.parse_rating``)."""
    from llavaguard.inputs.labels import RATING_VOCABULARY, parse_rating

    word = scores.get(_norm(value)) if isinstance(value, str) else None
    if word is not None:
        return word
    try:
        return parse_rating(value)
    except ValueError:
        raise ConfigError(
            f"{where}: unknown score {value!r} (a score word of the mapping, or a rating: "
            f"{RATING_VOCABULARY})"
        ) from None


def import_labels(
    path: str,
    output: str,
    mapping: str | None = None,
    check_images: bool = True,
    policy: str | None = None,
) -> dict[str, Any]:
    """Rows with ``image`` and ``score`` (or ``rating``) and ``category`` (or ``label``) ->
    a labelled-images JSONL (``inputs.labels``, with the source score and label beside each
    row) that ``dataset build`` reads; returns the counts. Categories are resolved against
    ``policy`` (default: the built-in one), which the rows name."""
    from llavaguard.inputs.labels import LabelledSample, sample_id_of, write_labels
    from llavaguard.inputs.tables import first_given, numbered_rows, row_where
    from llavaguard.policy import Policy, canonical_category

    scores, categories = load_mapping(mapping)
    active = Policy.load(policy)
    base = Path(path).parent
    kept: list[LabelledSample] = []
    sources: list[dict[str, Any]] = []
    dropped: Counter[str] = Counter()
    for i, row in numbered_rows(path):
        where = row_where(path, i)
        image = str(first_given(row, "image") or "")
        if not image:
            raise ConfigError(f"{where}: no image")
        full = image if os.path.isabs(image) else str((base / image).resolve())
        if check_images and not os.path.isfile(full):
            raise ConfigError(f"{where}: image not found: {image}")
        rating = _rating(first_given(row, "score", "rating"), scores, where)
        if rating == "discard":
            dropped["discard"] += 1
            continue
        label = row.get("category", row.get("label"))
        code = categories.get(_norm(label))
        if code is None:
            code = (canonical_category(str(label), active) or "").split(":")[0] or None
        if code is None:
            raise ConfigError(f"{where}: unknown category label {label!r}")
        category = (
            active.taxonomy.none_category if code == "NA" else active.taxonomy.category(code).label
        )
        if rating == "Unsafe" and code == "NA":
            dropped["unsafe without a category"] += 1
            continue
        kept.append(LabelledSample(id=sample_id_of(row) or image, image=full, rating=rating,
                                   category=category, policy=active,
                                   rationale=str(row.get("rationale") or "")))  # fmt: skip
        sources.append({"source_score": row.get("score"), "source_label": label})
    write_labels(kept, output, extra=sources)
    return {
        "rows": len(kept) + sum(dropped.values()),
        "kept": len(kept),
        "dropped": dict(dropped),
        "ratings": dict(Counter(s.rating for s in kept)),
        "categories": dict(Counter(s.category for s in kept)),
    }
