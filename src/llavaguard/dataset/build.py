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
"""

from __future__ import annotations

import json
import random
import string
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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
    others = _others(img, policy)
    extra = rng.sample(others, k=min(len(others), rng.randint(0, 2)))
    return policy.with_states(allow=[own, *extra]), "Safe"


@_aug("v3")
def v3(img: LabelledImage, policy: Policy, rng: random.Random) -> tuple[Policy, str] | None:
    others = _others(img, policy)
    pick = rng.sample(others, k=min(len(others), rng.randint(1, 3)))
    return policy.with_states(allow=pick), img.rating


@_aug("v4")
def v4(img: LabelledImage, policy: Policy, rng: random.Random) -> tuple[Policy, str] | None:
    own = _own(img, policy)
    return None if own is None else (policy.with_states(sensitive=[own]), "Unsafe")


@_aug("v5")
def v5(img: LabelledImage, policy: Policy, rng: random.Random) -> tuple[Policy, str] | None:
    others = _others(img, policy)
    pick = rng.sample(others, k=min(len(others), rng.randint(1, 3)))
    return policy.with_states(sensitive=pick), img.rating


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


# ---- exports ------------------------------------------------------------------------------


def to_llava(samples: Sequence[Sample]) -> list[dict]:
    """The original LLaVA conversation format: the image first, then the policy."""
    return [
        {
            "id": s.id,
            "image": s.image,
            "conversations": [
                {"from": "human", "value": "<image>\n" + s.policy.text},
                {"from": "gpt", "value": s.answer()},
            ],
        }
        for s in samples
    ]


def to_labels(samples: Sequence[Sample]) -> list[dict]:
    """Rows ``llavaguard evaluate`` reads: policy by name and codes."""
    return [
        {
            "id": s.id,
            "image": s.image,
            "rating": s.rating,
            "category": s.category,
            "policy": s.policy.name,
            "allow": s.policy.allowed,
            "sensitive": s.policy.sensitive,
            "augmentation": s.augmentation,
        }
        for s in samples
    ]


def to_trl(samples: Sequence[Sample]) -> list[dict]:
    """TRL's conversational prompt/completion rows with the image path beside them."""
    return [
        {
            "id": s.id,
            "images": [s.image],
            "prompt": [
                {
                    "role": "user",
                    "content": [{"type": "image"}, {"type": "text", "text": s.policy.text}],
                }
            ],
            "completion": [
                {"role": "assistant", "content": [{"type": "text", "text": s.answer()}]}
            ],
        }
        for s in samples
    ]


def read_labelled(path: str) -> list[LabelledImage]:
    """Labelled images from JSONL, JSON, CSV or Parquet: id (default: image), image, rating,
    category (label, code or old spelling; empty for Safe means the none category),
    optional rationale. Errors name the file and row."""
    from pathlib import Path

    from llavaguard.evaluate.data import read_rows
    from llavaguard.policy import canonical_category

    policy = Policy.load()
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
) -> dict:
    """Augment, split per image, balance the training split, and write ``train`` and
    ``test`` in three formats (LLaVA JSON, TRL JSONL, evaluation labels JSONL) plus a summary.
    Returns the summary."""
    from collections import Counter
    from pathlib import Path

    images = read_labelled(labels)
    splits = split(images, test_fraction, seed)
    samples = augment(images, recipe, seed=seed)
    parts = {name: [s for s in samples if splits[s.image_id] == name] for name in ("train", "test")}
    if balance_train:
        parts["train"] = balance(parts["train"], seed)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {
        "labels": labels,
        "recipe": list(recipe),
        "seed": seed,
        "test_fraction": test_fraction,
        "balanced": balance_train,
        "splits": {},
    }
    for name, part in parts.items():
        (out / f"{name}.llava.json").write_text(json.dumps(to_llava(part), indent=1) + "\n")
        for fmt, rows in (("trl", to_trl(part)), ("labels", to_labels(part))):
            with (out / f"{name}.{fmt}.jsonl").open("w", encoding="utf-8") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
        summary["splits"][name] = {
            "samples": len(part),
            "images": len({s.image_id for s in part}),
            "ratings": dict(Counter(s.rating for s in part)),
            "categories": dict(Counter(s.category for s in part)),
            "augmentations": dict(Counter(s.augmentation or "default" for s in part)),
        }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
