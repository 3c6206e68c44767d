"""Predictions, read from files into typed rows, and joined with labelled samples.

Predictions: the JSONL of ``llavaguard assess`` or any table with an id (or image) and a
rating. Labelled samples are read by ``inputs.labels``, the one reader every step shares.

This module knows nothing about metrics or models.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from llavaguard.errors import ConfigError
from llavaguard.inputs.labels import LabelledSample, parse_rating
from llavaguard.inputs.tables import iter_rows
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


def load_predictions(path: str | Path) -> list[Prediction]:
    """Predictions from the JSONL of ``llavaguard assess`` or any table with an id and a rating.

    Keys: ``id`` (else ``image``), ``rating`` (Safe/Unsafe; anything else is an invalid
    answer), optional ``category``, ``score`` (P(Unsafe)), ``valid``, ``error``, ``policy_id``.
    """
    path = Path(path)
    out = []
    for i, row in enumerate(iter_rows(path), 1):
        key = row.get("id", row.get("image"))
        if key in (None, ""):
            raise ConfigError(f"{path}:{i}: a prediction needs an 'id' or an 'image'")
        rating = row.get("rating")
        try:
            rating = parse_rating(rating) if rating not in (None, "") else None
        except ValueError:
            rating = None
        score = row.get("score")
        try:
            score = float(score) if score not in (None, "") else None
        except (TypeError, ValueError):
            raise ConfigError(f"{path}:{i}: score must be a number, got {score!r}") from None
        valid = row.get("valid", rating is not None)
        if isinstance(valid, str):
            valid = valid.strip().lower() in {"true", "1", "yes"}
        out.append(
            Prediction(
                id=str(key),
                rating=rating,
                category=row.get("category") or None,
                score=score,
                valid=bool(valid),
                error=row.get("error") or None,
                policy_id=row.get("policy_id") or None,
                rationale=row.get("rationale") or None,
            )
        )
    return out


class Joined(BaseModel):
    """A labelled sample with what was predicted for it (None when nothing was)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    sample: LabelledSample
    prediction: Prediction | None

    @property
    def predicted_rating(self) -> str | None:
        return self.prediction.rating if self.prediction else None

    @property
    def predicted_category(self) -> str | None:
        p = self.prediction
        if p is None or p.category is None:
            return None
        return canonical_category(p.category, self.sample.policy) or p.category

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
    same image under several policies) must be matched by id.
    """
    by_id = {p.id: p for p in predictions}
    out = []
    for s in samples:
        p = by_id.get(s.id)
        if p is None and s.image is not None:
            p = by_id.get(s.image)
        out.append(Joined(sample=s, prediction=p))
    uses = Counter(s.image for s in samples if s.image)
    shared = {img for img, n in uses.items() if n > 1}
    if shared:
        # a prediction keyed by a shared image path must not be credited to several samples
        out = [
            Joined(sample=j.sample, prediction=None)
            if j.prediction and j.prediction.id != j.sample.id and j.sample.image in shared
            else j
            for j in out
        ]
    return out
