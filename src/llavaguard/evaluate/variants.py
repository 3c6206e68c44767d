"""Policy variants a model was not trained with, and the label each one implies.

The same labelled images are judged under changed policies; the expected answer follows from
the change: a sample whose own category is declared allowed must be Safe, one whose category
is declared sensitive must be Unsafe, and changes to other categories, to the order of the
categories or to their codes must not change the answer. Guards that overfit their training
policy fail these; this makes it measurable (reference, sections 4 and 8).

Each kind is a function registered in ``KINDS``; a sample it does not apply to is skipped.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from llavaguard.errors import ConfigError
from llavaguard.evaluate.data import LabelledSample
from llavaguard.policy import Category, Policy, State, Taxonomy

Variant = Callable[[LabelledSample, random.Random], LabelledSample | None]
KINDS: dict[str, Variant] = {}


def _kind(name: str) -> Callable[[Variant], Variant]:
    def register(fn: Variant) -> Variant:
        KINDS[name] = fn
        return fn

    return register


def _own(s: LabelledSample) -> str | None:
    return s.policy.code_of(s.category)


def _others(s: LabelledSample) -> list[str]:
    own = _own(s)
    return [c.code for c in s.policy.categories if c.code != own and _default(s, c.code)]


def _default(s: LabelledSample, code: str) -> bool:
    return s.policy.state(code) is State.DEFAULT


def _derive(s: LabelledSample, policy: Policy, name: str, **changes: str) -> LabelledSample:
    """The sample under ``policy``: its own category allowed makes it Safe, sensitive Unsafe,
    anything else leaves the label as it was."""
    v = s.model_copy(
        update={"id": f"{s.id}@{name}", "policy": policy, "variant": name,
                "augmentation": None, **changes}
    )  # fmt: skip
    own = _own(v)
    if own is not None:
        state = policy.state(own)
        rating = {State.ALLOWED: "Safe", State.SENSITIVE: "Unsafe"}.get(state, v.rating)
        v = v.model_copy(update={"rating": rating})
    return v


@_kind("allow-own")
def allow_own(s: LabelledSample, rng: random.Random) -> LabelledSample | None:
    """The sample's category and 0-2 others declared allowed: Safe (cf. v2a)."""
    own = _own(s)
    if own is None or not _default(s, own):
        return None
    others = _others(s)
    extra = rng.sample(others, k=min(len(others), rng.randint(0, 2)))
    return _derive(s, s.policy.with_states(allow=[own, *extra]), "allow-own")


@_kind("sensitive-own")
def sensitive_own(s: LabelledSample, rng: random.Random) -> LabelledSample | None:
    """The sample's category declared sensitive: Unsafe (cf. v4), also for a Safe sample that
    names a category (related content the default policy allows)."""
    own = _own(s)
    if own is None or not _default(s, own):
        return None
    return _derive(s, s.policy.with_states(sensitive=[own]), "sensitive-own")


def _some_others(s: LabelledSample, rng: random.Random, state: str) -> LabelledSample | None:
    others = _others(s)
    if not others:
        return None
    pick = rng.sample(others, k=min(len(others), rng.randint(1, 3)))
    return _derive(s, s.policy.with_states(**{state: pick}), f"{state}-others")


@_kind("allow-others")
def allow_others(s: LabelledSample, rng: random.Random) -> LabelledSample | None:
    """1-3 other categories declared allowed: unchanged (cf. v3)."""
    return _some_others(s, rng, "allow")


@_kind("sensitive-others")
def sensitive_others(s: LabelledSample, rng: random.Random) -> LabelledSample | None:
    """1-3 other categories declared sensitive: unchanged (cf. v5)."""
    return _some_others(s, rng, "sensitive")


@_kind("mixed")
def mixed(s: LabelledSample, rng: random.Random) -> LabelledSample | None:
    """Some other categories allowed and some sensitive at once, the own one either way."""
    own = _own(s)
    others = _others(s)
    if own is None or len(others) < 2 or not _default(s, own):
        return None
    rng.shuffle(others)
    k = rng.randint(1, len(others) - 1)
    allow, sensitive = others[:k][:3], others[k:][:3]
    (allow if rng.random() < 0.5 else sensitive).append(own)
    return _derive(s, s.policy.with_states(allow=allow, sensitive=sensitive), "mixed")


@_kind("shuffle")
def shuffle(s: LabelledSample, rng: random.Random) -> LabelledSample | None:
    """The categories listed in another order: unchanged."""
    cats = list(s.policy.categories)
    if len(cats) < 2:
        return None
    order = cats[:]
    while order == cats:
        rng.shuffle(order)
    taxonomy = s.policy.taxonomy.model_copy(
        update={"categories": tuple(order), "name": f"{s.policy.name}-shuffled",
                "source": f"variant of {s.policy.name}"}
    )  # fmt: skip
    return _derive(s, Policy(taxonomy=taxonomy, states=s.policy.states), "shuffle")


@_kind("rename")
def rename(s: LabelledSample, rng: random.Random) -> LabelledSample | None:
    """Custom categories: every code replaced by a new one (C1, C2, ... in a random
    assignment), with allowed/sensitive texts written for the new codes: unchanged, and the
    expected category is the renamed one."""
    cats = list(s.policy.categories)
    codes = [f"C{i + 1}" for i in range(len(cats))]
    rng.shuffle(codes)
    mapping = dict(zip((c.code for c in cats), codes, strict=True))
    renamed = tuple(
        Category(code=mapping[c.code], name=c.name, default=c.default)
        for c in sorted(cats, key=lambda c: int(mapping[c.code][1:]))
    )
    taxonomy = Taxonomy(
        name=f"{s.policy.name}-renamed",
        preamble=s.policy.taxonomy.preamble,
        categories=renamed,
        none_category=s.policy.taxonomy.none_category,
        source=f"variant of {s.policy.name}",
    )
    states = {mapping[k]: v for k, v in s.policy.states.items()}
    own = _own(s)
    category = s.category
    if own is not None:
        category = f"{mapping[own]}: {s.category.split(':', 1)[1].strip()}"
    return _derive(s, Policy(taxonomy=taxonomy, states=states), "rename", category=category)


def make_variants(
    samples: Sequence[LabelledSample], kinds: Sequence[str], seed: int = 0
) -> list[LabelledSample]:
    """For each default-policy sample and each kind, one variant (where the kind applies).

    ``kinds`` may be ``["all"]``. Seeded: the same inputs give the same variants.
    """
    names = list(KINDS) if list(kinds) == ["all"] else list(kinds)
    unknown = [k for k in names if k not in KINDS]
    if unknown:
        raise ConfigError(f"unknown variant {unknown[0]!r} (valid: all, {', '.join(KINDS)})")
    rng = random.Random(seed)
    out = []
    for s in samples:
        if not s.default_policy:
            continue
        for name in names:
            v = KINDS[name](s, rng)
            if v is not None:
                out.append(v)
    return out


def to_rows(samples: Sequence[LabelledSample]) -> list[dict[str, Any]]:
    """Rows ``load_labels`` reads back: a built-in policy by name and codes, any other policy
    inline (its taxonomy and states)."""
    rows = []
    for s in samples:
        p = s.policy
        row: dict[str, Any] = {"id": s.id, "image": s.image, "rating": s.rating,
                               "category": s.category}  # fmt: skip
        if p.taxonomy.source == f"builtin:{p.name}":
            row.update(policy=p.name, allow=p.allowed, sensitive=p.sensitive)
        else:
            row["policy"] = p.model_dump(mode="json")
        row.update(policy_id=p.id, variant=s.variant)
        rows.append(row)
    return rows
