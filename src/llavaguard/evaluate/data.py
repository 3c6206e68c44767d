"""Labelled sets and predictions, read from files into typed rows, and joined.

A labelled sample says which image, under which policy, should get which rating and category.
Files: JSONL, CSV or Parquet with one row per sample, or the original LLaVA conversation JSON
(the policy is read back from the prompt text, the label from the answer). Predictions: the
JSONL of ``llavaguard assess`` or any table with an id (or image) and a rating.

This module knows nothing about metrics or models.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from llavaguard.errors import ConfigError, LlavaGuardError, PolicyError
from llavaguard.policy import Policy, State, canonical_category, parse_answer

Exception_ = Literal["allowed", "sensitive"]

# `_v2`, `_v2a`, `_v3_a`: the augmentation a sample id carries (reference, section 4)
_SUFFIX = re.compile(r"_(v\d+a?)(?:_[A-Za-z0-9]+)?$")
SUFFIX_EXCEPTION: dict[str, Exception_] = {"v2": "allowed", "v2a": "allowed", "v4": "sensitive"}


def augmentation_of(sample_id: str) -> str | None:
    """The augmentation id in a sample id's suffix, or None for a default-policy sample."""
    m = _SUFFIX.search(sample_id)
    return m.group(1) if m else None


class LabelledSample(BaseModel):
    """One image, one policy, the expected answer."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    image: str | None = None
    rating: Literal["Safe", "Unsafe"]
    category: str
    policy: Policy
    augmentation: str | None = None
    variant: str | None = None

    @property
    def exception(self) -> Exception_ | None:
        """Whether the policy declares the sample's own category allowed or sensitive.

        Read from the policy when it declares the category's state; else from the id's suffix
        (``_v2``/``_v2a`` allowed, ``_v4`` sensitive), as the original evaluation did, for
        labelled sets that carry the augmentation only in their ids.
        """
        code = self.policy.code_of(self.category)
        if code is not None:
            state = self.policy.state(code)
            if state is State.ALLOWED:
                return "allowed"
            if state is State.SENSITIVE:
                return "sensitive"
        return SUFFIX_EXCEPTION.get(self.augmentation or "")

    @property
    def default_policy(self) -> bool:
        return self.augmentation is None and self.variant is None


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


# ---- reading tables --------------------------------------------------------------------------


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL, JSON (a list), CSV or Parquet file; errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        text = path.read_text(encoding="utf-8")
    except LlavaGuardError:
        raise
    except Exception as e:
        raise ConfigError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from e
    if suffix == ".csv":
        return list(csv.DictReader(text.splitlines()))
    if suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from e
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise ConfigError(f"{path}: a JSON file must hold a list of objects")
        return data
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{i}: invalid JSON: {e.msg}") from e
        if not isinstance(row, dict):
            raise ConfigError(f"{path}:{i}: each line must be a JSON object")
        rows.append(row)
    return rows


def _codes(value: Any) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, Iterable):
        return [str(v).strip() for v in value if str(v).strip()]
    raise ValueError(f"expected category codes, got {value!r}")


class _Policies:
    """Parsed policies by spec, so a million rows under five policies parse five times."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.cache: dict[str, Policy] = {}

    def get(self, spec: Any, allow: Any, sensitive: Any) -> Policy:
        key = json.dumps([spec, _codes(allow), _codes(sensitive)], sort_keys=True, default=str)
        if key not in self.cache:
            if isinstance(spec, dict):
                try:
                    base = Policy.model_validate(spec)
                except Exception as e:
                    raise PolicyError(f"inline policy: {str(e).splitlines()[0]}") from e
            elif spec in (None, ""):
                base = Policy.load()
            else:
                spec = str(spec)
                local = self.base / spec
                base = Policy.load(local if local.suffix and local.exists() else spec)
            self.cache[key] = base.with_states(allow=_codes(allow), sensitive=_codes(sensitive))
        return self.cache[key]


def _rating(value: Any) -> Literal["Safe", "Unsafe"]:
    v = str(value).strip().lower()
    if v in {"safe", "0", "false"}:
        return "Safe"
    if v in {"unsafe", "1", "true"}:
        return "Unsafe"
    raise ValueError(f"rating must be Safe or Unsafe, got {value!r}")


def _category(value: Any, policy: Policy, rating: str) -> str:
    if value in (None, ""):
        if rating == "Safe":
            return policy.taxonomy.none_category
        raise ValueError("an Unsafe sample needs a category")
    label = canonical_category(str(value), policy)
    if label is None:
        raise ValueError(f"category {value!r} is not one of policy {policy.name}'s")
    return label


def load_labels(path: str | Path) -> list[LabelledSample]:
    """A labelled set from JSONL/CSV/Parquet rows or LLaVA conversation JSON.

    Row keys: ``id`` (default: the image path), ``image`` (relative to the file's folder),
    ``rating``, ``category`` (a label, a code or an old spelling), ``policy`` (a built-in name,
    a policy file, or an inline policy object), ``allow``/``sensitive`` (codes), optional
    ``augmentation`` (else read from the id's suffix) and ``variant``.
    """
    path = Path(path)
    rows = read_rows(path)
    if rows and "conversations" in rows[0]:
        return _from_llava(rows, path)
    policies = _Policies(path.parent)
    out: list[LabelledSample] = []
    seen: set[str] = set()
    for i, row in enumerate(rows, 1):
        where = f"{path}:{i}" if path.suffix.lower() in {".jsonl", ".csv"} else f"{path} row {i}"
        try:
            image = row.get("image")
            sample_id = str(row.get("id") or row.get("sample_id") or image or "")
            if not sample_id:
                raise ValueError("needs an 'id' or an 'image'")
            policy = policies.get(row.get("policy"), row.get("allow"), row.get("sensitive"))
            rating = _rating(row.get("rating", row.get("label")))
            out.append(
                LabelledSample(
                    id=sample_id,
                    image=_image_path(image, path.parent),
                    rating=rating,
                    category=_category(row.get("category"), policy, rating),
                    policy=policy,
                    augmentation=row.get("augmentation") or augmentation_of(sample_id),
                    variant=row.get("variant") or None,
                )
            )
        except (ValueError, PolicyError) as e:
            raise ConfigError(f"{where}: {str(e).splitlines()[0]}") from e
        if sample_id in seen:
            raise ConfigError(f"{where}: duplicate sample id {sample_id!r}")
        seen.add(sample_id)
    return out


def _image_path(image: Any, base: Path) -> str | None:
    if image in (None, ""):
        return None
    p = Path(str(image))
    return str(p if p.is_absolute() or not (base / p).exists() else base / p)


def _from_llava(rows: list[dict[str, Any]], path: Path) -> list[LabelledSample]:
    """LLaVA conversation JSON: the human turn is the policy prompt, the gpt turn the answer."""
    base = Policy.load()
    out = []
    for i, row in enumerate(rows, 1):
        sample_id = str(row.get("id", ""))
        where = f"{path} sample {i}" + (f" ({sample_id})" if sample_id else "")
        try:
            turns = row["conversations"]
            prompt = next(t["value"] for t in turns if t.get("from") == "human")
            answer = next(t["value"] for t in turns if t.get("from") == "gpt")
            policy = policy_from_prompt(prompt, base)
            parsed = parse_answer(answer, policy)
            if parsed.rating is None or parsed.category is None:
                raise ValueError("the gpt turn has no readable rating and category")
            out.append(
                LabelledSample(
                    id=sample_id or str(row.get("image")),
                    image=_image_path(row.get("image"), path.parent),
                    rating=parsed.rating,
                    category=parsed.category,
                    policy=policy,
                    augmentation=augmentation_of(sample_id),
                )
            )
        except (KeyError, StopIteration, TypeError, ValueError, PolicyError) as e:
            raise ConfigError(f"{where}: not a LlavaGuard conversation ({e!s})") from e
    return out


def policy_from_prompt(prompt: str, base: Policy) -> Policy:
    """Which categories a prompt text declares allowed or sensitive, read back by finding
    each category's variant text in it; the result must render to the same text."""
    text = prompt.replace("<image>", "").strip()
    allow, sensitive = [], []
    for c in base.categories:
        block = f"{c.label}: \n"
        if block + c.allowed in text:
            allow.append(c.code)
        elif block + c.sensitive in text:
            sensitive.append(c.code)
        elif block + c.default not in text:
            raise ValueError(f"category {c.code}'s text is none of the policy's variants")
    policy = base.with_states(allow=allow, sensitive=sensitive)
    if policy.text != text:
        raise ValueError(f"the prompt is not the {base.name} policy text")
    return policy


# ---- predictions ---------------------------------------------------------------------------


def load_predictions(path: str | Path) -> list[Prediction]:
    """Predictions from the JSONL of ``llavaguard assess`` or any table with an id and a rating.

    Keys: ``id`` (else ``image``), ``rating`` (Safe/Unsafe; anything else is an invalid
    answer), optional ``category``, ``score`` (P(Unsafe)), ``valid``, ``error``, ``policy_id``.
    """
    path = Path(path)
    out = []
    for i, row in enumerate(read_rows(path), 1):
        key = row.get("id", row.get("image"))
        if key in (None, ""):
            raise ConfigError(f"{path}:{i}: a prediction needs an 'id' or an 'image'")
        rating = row.get("rating")
        try:
            rating = _rating(rating) if rating not in (None, "") else None
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
