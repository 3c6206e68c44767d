"""The one labelled-sample model, its reader and its writer.

A labelled sample says which image, under which policy, should get which rating and category
(and, for training, why: the rationale). Dataset import writes them, rationales, build,
evaluate and train read them; all through ``read_labels`` and ``write_labels`` here, so a file
one step writes is a file the next reads, and a label resolves the same way everywhere.

Files: JSONL, CSV or Parquet with one row per sample (``inputs.tables``), or the original
LLaVA conversation JSON (the policy is read back from the prompt text, the label from the
answer). Rows without a ``policy`` column are read under the policy the caller gives (default:
the built-in one), so a custom taxonomy's own codes resolve.

This module knows nothing about augmentations, metrics or models.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from itertools import chain
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llavaguard.errors import ConfigError, PolicyError
from llavaguard.inputs.tables import iter_rows, row_where
from llavaguard.policy import Policy, State, canonical_category, parse_answer

Rating = Literal["Safe", "Unsafe"]
Exception_ = Literal["allowed", "sensitive"]

# `_v2`, `_v2a`, `_v3_a`: the augmentation a sample id carries (reference, section 4)
_SUFFIX = re.compile(r"_(v\d+a?)(?:_[A-Za-z0-9]+)?$")
SUFFIX_EXCEPTION: dict[str, Exception_] = {"v2": "allowed", "v2a": "allowed", "v4": "sensitive"}


def augmentation_of(sample_id: str) -> str | None:
    """The augmentation id in a sample id's suffix, or None for a default-policy sample."""
    m = _SUFFIX.search(sample_id)
    return m.group(1) if m else None


class LabelledSample(BaseModel):
    """One image, one policy, the expected answer (and the rationale for it, if any).

    ``image_id`` names the labelled image a sample was derived from (an augmentation or a
    policy variant keeps it), so a split keeps all samples of an image together.
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    image: str | None = None
    rating: Rating
    category: str
    policy: Policy = Field(default_factory=Policy.load)  # no policy named: the built-in one
    rationale: str = ""
    augmentation: str | None = None
    variant: str | None = None
    image_id: str = ""

    @model_validator(mode="after")
    def _own_image_id(self) -> LabelledSample:
        if not self.image_id:
            object.__setattr__(self, "image_id", self.id)
        return self

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

    def under(self, policy: Policy, category: str | None = None, **update: Any) -> LabelledSample:
        """This sample under another policy (``policy.edits``), with the label it implies: its
        own category declared allowed makes it Safe, declared sensitive Unsafe; any other
        change leaves the label as it was. ``update`` sets further fields (id, ...)."""
        category = category or self.category
        rating = self.rating
        code = policy.code_of(category)
        if code is not None:
            state = policy.state(code)
            rating = {State.ALLOWED: "Safe", State.SENSITIVE: "Unsafe"}.get(state, rating)
        return self.model_copy(
            update={"policy": policy, "category": category, "rating": rating, **update}
        )

    def answer(self) -> str:
        """The target text, in the layout the released models were trained on."""
        return json.dumps(
            {"rating": self.rating, "category": self.category, "rationale": self.rationale},
            indent=4,
        )


# ---- reading ---------------------------------------------------------------------------------


def read_labels(
    path: str | Path,
    policy: Policy | str | Path | None = None,
    *,
    require_images: bool = False,
) -> list[LabelledSample]:
    """A labelled set from JSONL/CSV/Parquet rows or LLaVA conversation JSON.

    Row keys: ``id`` (default: the image path), ``image`` (relative to the file's folder; made
    absolute), ``rating``, ``category`` (a label, a code or an old spelling; empty for Safe
    means none applies), optional ``rationale``, ``policy`` (a built-in name, a policy file, or
    an inline policy object; default ``policy``), ``allow``/``sensitive`` (codes), optional
    ``augmentation`` (else read from the id's suffix) and ``variant``. Errors name the row.
    ``require_images``: a row without an image is an error (training and rationales need the
    pixels; an evaluation against given predictions does not).
    """
    path = Path(path)
    default = Policy.load(policy)
    rows = iter_rows(path)
    first = next(rows, None)
    if first is None:
        return []
    if "conversations" in first:
        return _from_llava([first, *rows], path, default)
    policies = _Policies(path.parent, default)
    out: list[LabelledSample] = []
    seen: set[str] = set()
    for i, row in enumerate(chain([first], rows), 1):
        where = row_where(path, i)
        try:
            sample = _sample(row, path.parent, policies)
            if require_images and sample.image is None:
                raise ValueError("no image")
        except (ValueError, PolicyError) as e:
            raise ConfigError(f"{where}: {str(e).splitlines()[0]}") from e
        if sample.id in seen:
            raise ConfigError(f"{where}: duplicate sample id {sample.id!r}")
        seen.add(sample.id)
        out.append(sample)
    return out


def _sample(row: dict[str, Any], base: Path, policies: _Policies) -> LabelledSample:
    image = row.get("image")
    sample_id = str(row.get("id") or row.get("sample_id") or image or "")
    if not sample_id:
        raise ValueError("needs an 'id' or an 'image'")
    policy = policies.get(row.get("policy"), row.get("allow"), row.get("sensitive"))
    rating = parse_rating(row.get("rating", row.get("label")))
    return LabelledSample(
        id=sample_id,
        image=_image_path(image, base),
        rating=rating,
        category=_category(row.get("category"), policy, rating),
        policy=policy,
        rationale=str(row.get("rationale") or ""),
        augmentation=row.get("augmentation") or augmentation_of(sample_id),
        variant=row.get("variant") or None,
    )


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

    def __init__(self, base: Path, default: Policy) -> None:
        self.base = base
        self.default = default
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
                base = self.default
            else:
                spec = str(spec)
                local = self.base / spec
                base = Policy.load(local if local.suffix and local.exists() else spec)
            self.cache[key] = base.with_states(allow=_codes(allow), sensitive=_codes(sensitive))
        return self.cache[key]


def parse_rating(value: Any) -> Rating:
    """Safe or Unsafe from the spellings tables use (also 0/1, false/true)."""
    v = str(value).strip().lower()
    if v in {"safe", "0", "false"}:
        return "Safe"
    if v in {"unsafe", "1", "true"}:
        return "Unsafe"
    raise ValueError(f"rating must be Safe or Unsafe, got {value!r}")


def _category(value: Any, policy: Policy, rating: str) -> str:
    none = policy.taxonomy.none_category
    if value in (None, ""):
        if rating == "Safe":
            return none
        raise ValueError("an Unsafe sample needs a category")
    label = canonical_category(str(value), policy)
    if label is None:
        raise ValueError(f"category {value!r} is not one of policy {policy.name}'s")
    if rating == "Unsafe" and label == none:
        raise ValueError(f"an Unsafe sample needs a category other than {none.split(':')[0]}")
    return label


def _image_path(image: Any, base: Path) -> str | None:
    """Absolute: a relative path is relative to the labels file, wherever the reader runs."""
    if image in (None, ""):
        return None
    p = Path(str(image))
    return str(p if p.is_absolute() else (base / p).resolve())


def _from_llava(rows: list[dict[str, Any]], path: Path, base: Policy) -> list[LabelledSample]:
    """LLaVA conversation JSON: the human turn is the policy prompt, the gpt turn the answer."""
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
                    rationale=parsed.rationale or "",
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


# ---- writing ---------------------------------------------------------------------------------


def policy_spec(policy: Policy) -> str | dict[str, Any]:
    """How a row names its policy: a built-in by name, any other taxonomy inline (so the
    labels do not depend on where its file was); the states go in ``allow``/``sensitive``."""
    if policy.taxonomy.source == f"builtin:{policy.name}":
        return policy.name
    return Policy(taxonomy=policy.taxonomy).model_dump(mode="json")


def label_row(sample: LabelledSample) -> dict[str, Any]:
    """The row ``read_labels`` reads back as the same sample (the one row layout)."""
    p = sample.policy
    return {
        "id": sample.id,
        "image": sample.image,
        "rating": sample.rating,
        "category": sample.category,
        "rationale": sample.rationale,
        "policy": policy_spec(p),
        "allow": p.allowed,
        "sensitive": p.sensitive,
        "policy_id": p.id,
        "augmentation": sample.augmentation,
        "variant": sample.variant,
    }


def write_labels(
    samples: Sequence[LabelledSample],
    path: str | Path,
    extra: Sequence[dict[str, Any]] | None = None,
) -> Path:
    """Write ``samples`` as JSONL rows (``label_row``), each followed by its ``extra`` columns
    when given (provenance such as the source score); written to a temporary name and renamed,
    so a crash never leaves half a labels file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = extra if extra is not None else [{}] * len(samples)
    if len(extra) != len(samples):
        raise ConfigError(f"{path}: {len(extra)} extra rows for {len(samples)} samples")
    tmp = path.with_name("." + path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for sample, columns in zip(samples, extra, strict=True):
            f.write(json.dumps(label_row(sample) | columns) + "\n")
    os.replace(tmp, path)
    return path
