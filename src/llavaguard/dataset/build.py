"""From labelled images to a policy-following training set, as the LlavaGuard paper built it
(reference, sections 4 and 5): policy augmentations, rating balance, image-level splits, and
exports in the formats trainers read.

Augmentations (c = the image's own category; applied to Unsafe images only):
  v1  each other category allowed with p = 0.5            label unchanged
  v2  c allowed                                           Safe, category stays c
  v2a c and 0-2 random others allowed                     Safe
  v3  1-3 random others allowed                           unchanged
  v4  c sensitive                                         Unsafe
  v5  1-3 random others sensitive                         unchanged
Sample ids carry the augmentation as a suffix (``_v2``, ``_v3_a``, ...), which the evaluation
reads back. Everything is seeded: the same inputs and seed give the same samples.

Exports are a registry (``FORMATS``): a Hugging Face datasets folder with the images inside
(``dataset.hf``), LLaVA conversation JSON, TRL prompt/completion JSONL, LLaMA-Factory sharegpt
JSON with its ``dataset_info.json``, and the labels the evaluation reads; ``dataset.summary``
renders the counts for people.
"""

from __future__ import annotations

import json
import random
import string
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from llavaguard.dataset.exports import FORMATS, check_formats

# the row converters, importable from here as before they had a module of their own
from llavaguard.dataset.exports import to_labels as to_labels
from llavaguard.dataset.exports import to_llava as to_llava
from llavaguard.dataset.exports import to_sharegpt as to_sharegpt
from llavaguard.dataset.exports import to_trl as to_trl
from llavaguard.errors import ConfigError
from llavaguard.policy import Policy

V12_RECIPE = ("v3", "v3", "v3", "v2")  # per Unsafe image, beside its default-policy sample


@dataclass(frozen=True)
class LabelledImage:
    id: str
    image: str
    rating: str  # Safe or Unsafe
    category: str  # a label of the policy
    rationale: str = ""


@dataclass(frozen=True)
class Sample:
    id: str
    image: str
    rating: str
    category: str
    rationale: str
    policy: Policy
    augmentation: str | None
    image_id: str

    def answer(self) -> str:
        """The target text, in the layout the released models were trained on."""
        return json.dumps(
            {"rating": self.rating, "category": self.category, "rationale": self.rationale},
            indent=4,
        )


Augment = Callable[[LabelledImage, Policy, random.Random], tuple[Policy, str] | None]
AUGMENTATIONS: dict[str, Augment] = {}


def _aug(name: str) -> Callable[[Augment], Augment]:
    def register(fn: Augment) -> Augment:
        AUGMENTATIONS[name] = fn
        return fn

    return register


def _own(img: LabelledImage, policy: Policy) -> str | None:
    return policy.code_of(img.category)


def _others(img: LabelledImage, policy: Policy) -> list[str]:
    own = _own(img, policy)
    return [c.code for c in policy.categories if c.code != own]


def _draw(others: list[str], rng: random.Random, low: int, high: int) -> list[str]:
    """``low``-``high`` of ``others`` at random (fewer when there are fewer)."""
    return rng.sample(others, k=min(len(others), rng.randint(low, high)))


@_aug("v1")
def v1(img: LabelledImage, policy: Policy, rng: random.Random) -> tuple[Policy, str] | None:
    allow = [c for c in _others(img, policy) if rng.random() < 0.5]
    return policy.with_states(allow=allow), img.rating


@_aug("v2")
def v2(img: LabelledImage, policy: Policy, rng: random.Random) -> tuple[Policy, str] | None:
    own = _own(img, policy)
    return None if own is None else (policy.with_states(allow=[own]), "Safe")


@_aug("v2a")
def v2a(img: LabelledImage, policy: Policy, rng: random.Random) -> tuple[Policy, str] | None:
    own = _own(img, policy)
    if own is None:
        return None
    return policy.with_states(allow=[own, *_draw(_others(img, policy), rng, 0, 2)]), "Safe"


@_aug("v3")
def v3(img: LabelledImage, policy: Policy, rng: random.Random) -> tuple[Policy, str] | None:
    return policy.with_states(allow=_draw(_others(img, policy), rng, 1, 3)), img.rating


@_aug("v4")
def v4(img: LabelledImage, policy: Policy, rng: random.Random) -> tuple[Policy, str] | None:
    own = _own(img, policy)
    return None if own is None else (policy.with_states(sensitive=[own]), "Unsafe")


@_aug("v5")
def v5(img: LabelledImage, policy: Policy, rng: random.Random) -> tuple[Policy, str] | None:
    return policy.with_states(sensitive=_draw(_others(img, policy), rng, 1, 3)), img.rating


def augment(
    images: Sequence[LabelledImage],
    recipe: Sequence[str] = V12_RECIPE,
    policy: Policy | None = None,
    seed: int = 0,
) -> list[Sample]:
    """Each image under the default policy; each Unsafe image also once per recipe entry.

    Repeated entries are independent draws, suffixed ``_v3_a``, ``_v3_b``, ...; a single one
    is suffixed ``_v2``. Each image draws from its own seeded generator, so adding images does
    not change the samples of the others.
    """
    policy = policy or Policy.load()
    unknown = [a for a in recipe if a not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(
            f"unknown augmentation {unknown[0]!r} (valid: {', '.join(AUGMENTATIONS)})"
        )
    counts = defaultdict(int)
    for a in recipe:
        counts[a] += 1
    out: list[Sample] = []
    for img in images:
        out.append(Sample(img.id, img.image, img.rating, img.category, img.rationale, policy,
                          None, img.id))  # fmt: skip
        if img.rating != "Unsafe":
            continue
        rng = random.Random(f"{seed}:{img.id}")
        drawn = defaultdict(int)
        for a in recipe:
            made = AUGMENTATIONS[a](img, policy, rng)
            letter = string.ascii_lowercase[drawn[a]]
            drawn[a] += 1
            if made is None:
                continue
            variant, rating = made
            suffix = f"_{a}_{letter}" if counts[a] > 1 else f"_{a}"
            rationale = img.rationale
            if rating != img.rating:  # the label the rationale argued for was turned around
                rationale = exception_rationale(img, rating)
            out.append(Sample(img.id + suffix, img.image, rating, img.category, rationale,
                              variant, a, img.id))  # fmt: skip
    return out


def exception_rationale(img: LabelledImage, rating: str) -> str:
    """A rationale for a label an exception changed: the image's own description, then why the
    policy now rules the other way (the original rationale argued for the old label)."""
    name = img.category.split(":", 1)[-1].strip()
    if rating == "Safe":
        why = (f"The image shows {name.lower()} content, but the policy declares category "
               f"{img.category.split(':')[0]} non-violating, so it is allowed here.")  # fmt: skip
    else:
        why = (f"The policy declares category {img.category.split(':')[0]} sensitive, so "
               f"any {name.lower()} content is a violation.")  # fmt: skip
    return why


def split(
    images: Sequence[LabelledImage], test_fraction: float = 0.2, seed: int = 0
) -> dict[str, str]:
    """image id -> "train" or "test", stratified by (category, rating), per image (all the
    augmented samples of an image land in its split)."""
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"test fraction must be in [0, 1), got {test_fraction}")
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for img in images:
        strata[(img.category, img.rating)].append(img.id)
    rng = random.Random(seed)
    out = {}
    for key in sorted(strata):
        ids = sorted(strata[key])
        rng.shuffle(ids)
        n_test = round(len(ids) * test_fraction)
        for i, image_id in enumerate(ids):
            out[image_id] = "test" if i < n_test else "train"
    return out


def balance(samples: Sequence[Sample], seed: int = 0) -> list[Sample]:
    """Oversample the minority rating until both ratings are equally common; copies get ids
    ``<id>#2``, ``<id>#3``, ..."""
    by_rating: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_rating[s.rating].append(s)
    if len(by_rating) < 2:
        return list(samples)
    small, large = sorted(by_rating.values(), key=len)
    rng = random.Random(seed)
    extra = []
    copies: dict[str, int] = defaultdict(lambda: 1)
    for _ in range(len(large) - len(small)):
        s = rng.choice(small)
        copies[s.id] += 1
        extra.append(Sample(f"{s.id}#{copies[s.id]}", s.image, s.rating, s.category,
                            s.rationale, s.policy, s.augmentation, s.image_id))  # fmt: skip
    return list(samples) + extra


def read_labelled(path: str, policy: Policy | None = None) -> list[LabelledImage]:
    """Labelled images from JSONL, JSON, CSV or Parquet: id (default: image), image, rating,
    category (label, code or old spelling; empty for Safe means the none category),
    optional rationale. Errors name the file and row."""
    from llavaguard.evaluate.data import read_rows
    from llavaguard.policy import canonical_category

    policy = policy or Policy.load()
    out, seen = [], set()
    base = Path(path).parent
    for i, row in enumerate(read_rows(path), 1):
        where = f"{path}:{i}"
        image = str(row.get("image") or "")
        if not image:
            raise ConfigError(f"{where}: no image")
        rating = str(row.get("rating", "")).strip().capitalize()
        if rating not in ("Safe", "Unsafe"):
            raise ConfigError(f"{where}: rating must be Safe or Unsafe, got {row.get('rating')!r}")
        raw = row.get("category") or ""
        category = canonical_category(raw, policy) if raw else policy.taxonomy.none_category
        if category is None:
            raise ConfigError(f"{where}: unknown category {raw!r}")
        if rating == "Unsafe" and category == policy.taxonomy.none_category:
            raise ConfigError(f"{where}: an Unsafe image needs a category other than NA")
        image_id = str(row.get("id") or image)
        if image_id in seen:
            raise ConfigError(f"{where}: duplicate id {image_id!r}")
        seen.add(image_id)
        full = image if Path(image).is_absolute() else str((base / image).resolve())
        out.append(LabelledImage(image_id, full, rating, category, str(row.get("rationale") or "")))
    return out


def build_dataset(
    labels: str,
    output: str,
    *,
    recipe: Sequence[str] = V12_RECIPE,
    test_fraction: float = 0.2,
    balance_train: bool = True,
    seed: int = 0,
    formats: Sequence[str] = tuple(FORMATS),
    policy: str | Path | None = None,
) -> dict:
    """Augment, split per image, balance the training split, and write ``train`` and ``test``
    in ``formats`` (HF datasets folder, LLaVA JSON, TRL JSONL, LLaMA-Factory sharegpt; the
    evaluation labels always) plus summary.json, summary.md and summary.png. ``policy`` is
    the default policy the augmentations vary (a built-in name or a YAML/JSON taxonomy).
    Returns the summary."""
    from collections import Counter

    from llavaguard import __version__
    from llavaguard.dataset.summary import plot_summary, render_markdown

    formats = check_formats(formats)
    base_policy = Policy.load(policy)
    images = read_labelled(labels, base_policy)
    splits = split(images, test_fraction, seed)
    samples = augment(images, recipe, policy=base_policy, seed=seed)
    parts = {name: [s for s in samples if splits[s.image_id] == name] for name in ("train", "test")}
    if balance_train:
        parts["train"] = balance(parts["train"], seed)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        FORMATS[fmt](out, parts)
    summary: dict = {
        "labels": labels,
        "recipe": list(recipe),
        "seed": seed,
        "test_fraction": test_fraction,
        "balanced": balance_train,
        "splits": {},
        "formats": formats,
        "policy": base_policy.name,
        "llavaguard_version": __version__,
    }
    for name, part in parts.items():
        by_category: dict[str, Counter] = defaultdict(Counter)
        by_augmentation: dict[str, Counter] = defaultdict(Counter)
        for s in part:
            by_category[s.category][s.rating] += 1
            by_augmentation[s.augmentation or "default"][s.rating] += 1
        summary["splits"][name] = {
            "samples": len(part),
            "images": len({s.image_id for s in part}),
            "ratings": dict(Counter(s.rating for s in part)),
            "categories": dict(Counter(s.category for s in part)),
            "augmentations": dict(Counter(s.augmentation or "default" for s in part)),
            "by_category": {k: dict(v) for k, v in by_category.items()},
            "by_augmentation": {k: dict(v) for k, v in by_augmentation.items()},
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(render_markdown(summary), encoding="utf-8")
    plot_summary(summary, out / "summary.png")
    return summary
