"""Predictions, read from files into typed rows, and joined with labelled samples.

Predictions: the JSONL of ``llavaguard assess`` or any table with an id (or image) and a
rating. Labelled samples are read by ``inputs.labels``, the one reader every step shares.

This module knows nothing about metrics or models.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from llavaguard.errors import ConfigError
from llavaguard.inputs.labels import LabelledSample, parse_rating
from llavaguard.inputs.tables import first_given, numbered_rows, row_where, shown
from llavaguard.policy import canonical_category


class Prediction(BaseModel):
    """What a safeguard answered for one sample; only ``rating`` is required to score it."""

    model_config = ConfigDict(frozen=True)

    id: str
    rating: Literal["Safe", "Unsafe"] | None = None
    category: str | None = None
    score: float | None = None
    valid: bool = True
    error: str | None = None
    policy_id: str | None = None
    rationale: str | None = None
    model: str | None = None


def load_predictions(path: str | Path, notes: list[str] | None = None) -> list[Prediction]:
    """Predictions from the JSONL of ``llavaguard assess`` or any table with an id and a rating.

    Keys: ``id`` (else ``image``), ``rating`` (the labels' vocabulary, ``parse_rating``;
    empty or null: no answer, an invalid prediction), optional ``category``, ``score``
    (P(Unsafe), a number in [0, 1]), ``valid``, ``error``, ``policy_id``.

    Refused, naming the file and line: an empty file, a row without an id, a rating outside
    the vocabulary, a score that is not a finite number in [0, 1], and an id given twice with
    different content (which one would be scored?). An exact repeat of a row is dropped and
    said in ``notes`` (a file concatenated twice means the same thing once).
    """
    path = Path(path)
    out: dict[str, Prediction] = {}
    first_at: dict[str, int] = {}
    repeats: list[str] = []
    for n, row in numbered_rows(path):
        where = row_where(path, n)
        p = _prediction(row, where)
        if p.id in out:
            if p != out[p.id]:
                raise ConfigError(
                    f"{where}: prediction id {p.id!r} given twice with different content "
                    f"(first at {row_where(path, first_at[p.id])})"
                )
            repeats.append(where)
            continue
        out[p.id] = p
        first_at[p.id] = n
    if not out:
        raise ConfigError(f"{path}: no predictions (the file is empty or only a header)")
    if repeats and notes is not None:
        notes.append(
            f"{path}: {len(repeats)} exact repeat(s) of an earlier row dropped (first at "
            f"{repeats[0]})"
        )
    return list(out.values())


def _prediction(row: dict[str, Any], where: str) -> Prediction:
    key = first_given(row, "id", "image")
    if key is None:
        raise ConfigError(f"{where}: a prediction needs an 'id' or an 'image'")
    rating = row.get("rating")
    try:
        rating = parse_rating(rating) if rating not in (None, "") else None
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None
    valid = row.get("valid", rating is not None)
    if isinstance(valid, str):
        valid = valid.strip().lower() in {"true", "1", "yes"}
    try:
        return Prediction(
            id=str(key),
            rating=rating,
            category=_text(row.get("category")),
            score=_score(row.get("score"), where),
            valid=bool(valid),
            error=_text(row.get("error")),
            policy_id=_text(row.get("policy_id")),
            rationale=_text(row.get("rationale")),
            model=_text(row.get("model")),
        )
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{where}: {field}: {err['msg']}") from None


def _text(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _score(value: Any, where: str) -> float | None:
    """P(Unsafe), or None when not given. NaN, inf and numbers outside [0, 1] are refused: a
    NaN sorts anywhere, so one moved ROC AUC from 0.75 to 0.5 without a word."""
    if value is None or value == "":
        return None
    try:
        score = float(value)
    except (TypeError, ValueError, OverflowError):
        score = math.nan
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise ConfigError(
            f"{where}: score must be a number in [0, 1] (P(Unsafe)), got {shown(value)}"
        )
    return score


class Joined(BaseModel):
    """A labelled sample with what was predicted for it (None when nothing was), and the
    predicted category in the sample's policy's spelling (``join`` resolves it once)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    sample: LabelledSample
    prediction: Prediction | None
    predicted_category: str | None = None

    @property
    def predicted_rating(self) -> str | None:
        return self.prediction.rating if self.prediction else None

    @property
    def score(self) -> float | None:
        return self.prediction.score if self.prediction else None

    @property
    def policy_mismatch(self) -> bool:
        p = self.prediction
        return bool(p and p.policy_id and p.policy_id != self.sample.policy.id)


def join(samples: Sequence[LabelledSample], predictions: Sequence[Prediction]) -> list[Joined]:
    """Match each sample to its prediction by id, or by image path when ids are paths.

    A prediction matching no sample is ignored; one image path shared by several samples (the
    same image under several policies) must be matched by id. Each distinct spelling of a
    predicted category is resolved once per taxonomy (it was 60% of a 100,000-row run).
    """
    by_id = {p.id: p for p in predictions}
    uses = Counter(s.image for s in samples if s.image)
    resolved: dict[tuple[int, str], str] = {}
    out = []
    for s in samples:
        p = by_id.get(s.id)
        if p is None and s.image is not None and uses[s.image] == 1:
            p = by_id.get(s.image)  # a path shared by several samples credits none of them
        category = None
        if p is not None and p.category is not None:
            key = (id(s.policy.taxonomy), p.category)  # samples keep their taxonomies alive
            if key not in resolved:
                resolved[key] = canonical_category(p.category, s.policy) or p.category
            category = resolved[key]
        out.append(Joined(sample=s, prediction=p, predicted_category=category))
    return out
