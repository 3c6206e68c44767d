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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llavaguard.errors import ConfigError, PolicyError
from llavaguard.inputs.tables import first_given, numbered_rows, row_where, shown
from llavaguard.policy import Policy, State, canonical_category, parse_answer

Rating = Literal["Safe", "Unsafe"]
Exception_ = Literal["allowed", "sensitive"]

# `_v2`, `_v2a`, `_v3_a`: the augmentation a sample id carries (reference, section 4)
_SUFFIX = re.compile(r"_(v\d+a?)(?:_[A-Za-z0-9]+)?$")
SUFFIX_EXCEPTION: dict[str, Exception_] = {"v2": "allowed", "v2a": "allowed", "v4": "sensitive",
                                           "v7": "allowed"}  # fmt: skip


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
    empty_ok: bool = False,
) -> list[LabelledSample]:
    """A labelled set from JSONL/CSV/Parquet rows or LLaVA conversation JSON.

    Row keys: ``id`` (default: the image path), ``image`` (relative to the file's folder; made
    absolute), ``rating``, ``category`` (a label, a code or an old spelling; empty for Safe
    means none applies), optional ``rationale``, ``policy`` (a built-in name, a policy file, or
    an inline policy object; default ``policy``), ``allow``/``sensitive`` (codes), optional
    ``augmentation`` (else read from the id's suffix) and ``variant``. Errors name the row.
    ``require_images``: a row without an image is an error (training and rationales need the
    pixels; an evaluation against given predictions does not). ``empty_ok``: an empty file
    is no samples, not an error (a build's test split of size 0); elsewhere an empty labelled
    set would give an empty report that passes for a result.
    """
    path = Path(path)
    default = Policy.load(policy)
    rows = numbered_rows(path)
    first = next(rows, None)
    if first is None:
        if empty_ok:
            return []
        raise ConfigError(f"{path}: no labelled samples (the file is empty or only a header)")
    if "conversations" in first[1]:
        return _from_llava([first[1], *(row for _, row in rows)], path, default)
    named = ((row_where(path, n), row) for n, row in chain([first], rows))
    return samples_from_rows(named, path.parent, default, require_images=require_images)


def samples_from_rows(
    rows: Iterable[tuple[str, dict[str, Any]]],
    base: str | Path,
    policy: Policy | None = None,
    *,
    require_images: bool = False,
) -> list[LabelledSample]:
    """Label rows (the layout ``label_row`` writes, keys as ``read_labels`` says) -> samples,
    each checked as a labels file's rows are; ``where`` names its row in errors. Relative
    image paths and policy files are relative to ``base``. What reads labelled samples from
    anything other than a labels file (a public benchmark) comes through here, so its
    samples are those the same rows in a file would give."""
    base = Path(base)
    policies = _Policies(base, policy or Policy.load())
    root = base.resolve()
    out: list[LabelledSample] = []
    seen: dict[str, str] = {}
    for where, row in rows:
        try:
            sample = _sample(row, root, policies)
            if require_images and sample.image is None:
                raise ValueError("no image")
        except ValidationError as e:  # a column of the wrong type: say which, not pydantic's title
            raise ConfigError(f"{where}: {_first_error(e)}") from e
        except (ValueError, PolicyError) as e:
            raise ConfigError(f"{where}: {str(e).splitlines()[0]}") from e
        if sample.id in seen:
            raise ConfigError(
                f"{where}: duplicate sample id {sample.id!r} (first at {seen[sample.id]})"
            )
        seen[sample.id] = where
        out.append(sample)
    return out


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    field = ".".join(str(p) for p in err["loc"])
    return f"{field}: {err['msg'].removeprefix('Value error, ')}"


def sample_id_of(row: dict[str, Any]) -> str | None:
    """A row's sample id: ``id``, else ``sample_id``, else the image path; ``0`` is an id."""
    value = first_given(row, "id", "sample_id", "image")
    return None if value is None else str(value)


def _sample(row: dict[str, Any], base: Path, policies: _Policies) -> LabelledSample:
    image = row.get("image")
    sample_id = sample_id_of(row)
    if sample_id is None:
        raise ValueError("needs an 'id' or an 'image'")
    policy = policies.get(row.get("policy"), row.get("allow"), row.get("sensitive"))
    rating = parse_rating(first_given(row, "rating", "label"))
    return LabelledSample(
        id=sample_id,
        image=_image_path(image, base),
        rating=rating,
        category=policies.category(row.get("category"), policy, rating),
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
    """Parsed policies by spec, and resolved categories by (policy, spelling), so a million
    rows under five policies parse five times and canonicalise each distinct spelling once."""

    def __init__(self, base: Path, default: Policy) -> None:
        self.base = base
        self.default = default
        self.cache: dict[str, Policy] = {}
        self.categories: dict[tuple[int, Any, str], str] = {}

    def get(self, spec: Any, allow: Any, sensitive: Any) -> Policy:
        key = json.dumps([spec, _codes(allow), _codes(sensitive)], sort_keys=True, default=str)
        if key not in self.cache:
            base = self._base(spec)
            self.cache[key] = base.with_states(allow=_codes(allow), sensitive=_codes(sensitive))
        return self.cache[key]

    def _base(self, spec: Any) -> Policy:
        if isinstance(spec, dict):
            # the policy file's own format (name, categories, allow, sensitive), read by the
            # same code as a policy file, so its errors are the same one line
            return Policy.from_data(_public_shape(spec), where="inline policy")
        if spec in (None, ""):
            return self.default
        spec = str(spec)
        local = self.base / spec
        return Policy.load(local if local.suffix and local.exists() else spec)

    def category(self, value: Any, policy: Policy, rating: str) -> str:
        key = (id(policy.taxonomy), value if isinstance(value, str) else repr(value), rating)
        if key not in self.categories:  # the taxonomy lives as long as self.cache holds it
            self.categories[key] = _category(value, policy, rating)
        return self.categories[key]


def _public_shape(spec: dict[str, Any]) -> dict[str, Any]:
    """Rows written before labels carried the public policy format held the internal one,
    ``{"taxonomy": {...}, "states": {code: state}}``: read as the public format says it."""
    taxonomy, states = spec.get("taxonomy"), spec.get("states") or {}
    if (
        set(spec) <= {"taxonomy", "states"}
        and isinstance(taxonomy, dict)
        and isinstance(states, dict)
    ):
        data = {k: v for k, v in taxonomy.items() if k != "source"}
        for key, state in (("allow", State.ALLOWED), ("sensitive", State.SENSITIVE)):
            data[key] = [code for code, s in states.items() if s == state]
        return data
    return spec


# The one rating vocabulary of labels and predictions (case and surrounding spaces ignored):
# 1 / true means Unsafe, the positive class, as everywhere in the metrics.
RATING_WORDS: dict[str, Rating] = {
    "safe": "Safe", "0": "Safe", "false": "Safe",
    "unsafe": "Unsafe", "1": "Unsafe", "true": "Unsafe",
}  # fmt: skip
RATING_VOCABULARY = "Safe or Unsafe (any case; also 0/1 or false/true, 1 and true meaning Unsafe)"


def parse_rating(value: Any) -> Rating:
    """Safe or Unsafe from the spellings tables use: Safe/Unsafe in any case, 0/1 and
    false/true (as text, numbers or booleans: a Parquet column of 0.0/1.0 counts)."""
    if isinstance(value, bool):
        return "Unsafe" if value else "Safe"
    if isinstance(value, int | float) and value in (0, 1):
        return "Unsafe" if value == 1 else "Safe"
    rating = RATING_WORDS.get(value.strip().lower()) if isinstance(value, str) else None
    if rating is None:
        raise ValueError(f"rating must be {RATING_VOCABULARY}, got {shown(value)}")
    return rating


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
    """Absolute: a relative path is relative to the labels file, wherever the reader runs.
    ``base`` is resolved once by the caller and joined here without touching the disk (a
    ``resolve()`` per row was a fifth of reading 100,000 labels)."""
    if image in (None, ""):
        return None
    p = str(image)
    return str(Path(p)) if os.path.isabs(p) else os.path.normpath(os.path.join(base, p))


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
                    image=_image_path(row.get("image"), path.parent.resolve()),
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
    allow, sensitive = prompt_states(prompt, base)
    policy = base.with_states(allow=allow, sensitive=sensitive)
    if policy.text != prompt.replace("<image>", "").strip():
        raise ValueError(f"the prompt is not the {base.name} policy text")
    return policy


def prompt_states(prompt: str, base: Policy) -> tuple[list[str], list[str]]:
    """The codes a prompt text declares (allowed, sensitive), found by each category's
    default, allowed or sensitive text in it; a category found in none of them is an error.
    Only the category blocks are read: a caller that needs the whole text to be the
    policy's checks that itself (``policy_from_prompt``)."""
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
    return allow, sensitive


# ---- writing ---------------------------------------------------------------------------------


def policy_spec(policy: Policy) -> str | dict[str, Any]:
    """How a row names its policy: a built-in by name, any other taxonomy inline in the
    policy file's format (so the labels do not depend on where its file was, and a person
    can write the same); the states go in ``allow``/``sensitive``."""
    if policy.taxonomy.source == f"builtin:{policy.name}":
        return policy.name
    return policy.taxonomy.model_dump(mode="json", by_alias=True, exclude={"source"})


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
