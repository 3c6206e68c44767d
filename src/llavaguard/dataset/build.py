"""From labelled images to a policy-following training set, as the LlavaGuard paper built it
(reference, sections 4 and 5): policy augmentations, rating balance, image-level splits, and
exports in the formats trainers read.

Augmentations (c = the image's own category; v1-v7 are made of Unsafe images, v8 of Safe ones):
  v1  each other category allowed with p = 0.5            label unchanged
  v2  c allowed                                           Safe, category stays c
  v2a c and 0-2 random others allowed                     Safe
  v3  1-3 random others allowed                           unchanged
  v4  c sensitive                                         Unsafe
  v5  1-3 random others sensitive                         unchanged
  v6  c alone in force (every other category allowed)      unchanged
  v7  one random other alone in force (c allowed)          Safe
  v8  one random category alone in force (Safe images)     Safe
v6-v8 are llavaguard's own (not the paper's): the one-category policies that
``--multi-label`` asks about, which v1-v5 (at most 3 exceptions) never show a model. v8 shows
them with harmless images: the full synthetic benchmark's model, trained on v6/v7 alone, called
every image Unsafe under "only O5 in force" (docs/dataset.md has what each recipe did).
The augmentations are policy edits (``policy.edits``), the same the evaluation's variants make.
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
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llavaguard.dataset.exports import FORMATS, check_formats

# the row converters, importable from here as before they had a module of their own
from llavaguard.dataset.rows import to_llava as to_llava
from llavaguard.dataset.rows import to_sharegpt as to_sharegpt
from llavaguard.dataset.rows import to_trl as to_trl
from llavaguard.errors import ConfigError
from llavaguard.inputs.labels import LabelledSample, read_labels
from llavaguard.policy import Policy, edits
from llavaguard.policy.edits import Edit, edit_rng
from llavaguard.registry import Registry

V12_RECIPE = ("v3", "v3", "v3", "v2")  # per Unsafe image, beside its default-policy sample


# name -> policy edit (``policy.edits``, shared with the evaluation's variants)
AUGMENTATIONS: Registry[Edit] = Registry(
    "augmentation",
    {
        "v1": edits.allow_each_other,
        "v2": edits.allow_own,
        "v2a": edits.allow_own_and_others,
        "v3": edits.allow_others,
        "v4": edits.sensitive_own,
        "v5": edits.sensitive_others,
        "v6": edits.only_own,
        "v7": edits.only_other,
        "v8": edits.only_any,
    },
)
OF_SAFE_IMAGES = frozenset({"v8"})  # made of Safe images; every other augmentation of Unsafe ones


def augment(
    images: Sequence[LabelledSample], recipe: Sequence[str] = V12_RECIPE, seed: int = 0
) -> list[LabelledSample]:
    """Each image under its own policy, and once per recipe entry made of its rating
    (``OF_SAFE_IMAGES`` of Safe images, the others of Unsafe ones).

    Repeated entries are independent draws, suffixed ``_v3_a``, ``_v3_b``, ...; a single one
    is suffixed ``_v2``. Each entry of each image draws from its own generator
    (``edit_rng(seed, image id, v3_a)``), so adding images does not change the others' samples.
    """
    AUGMENTATIONS.get_many(list(recipe))  # an unknown name stops here, before any work
    counts = Counter(recipe)
    out: list[LabelledSample] = []
    for img in images:
        out.append(img.model_copy(update={"augmentation": None}))  # an id like x_v2 is no hint
        drawn: Counter[str] = Counter()
        for a in recipe:
            if (a in OF_SAFE_IMAGES) != (img.rating == "Safe"):
                continue
            letter = string.ascii_lowercase[drawn[a]]
            drawn[a] += 1
            suffix = f"{a}_{letter}" if counts[a] > 1 else a
            made = AUGMENTATIONS[a](img.policy, img.category, edit_rng(seed, img.id, suffix))
            if made is None:
                continue
            s = img.under(*made, id=f"{img.id}_{suffix}", augmentation=a)
            if s.rating != img.rating:  # the label the rationale argued for was turned around
                s = s.model_copy(update={"rationale": exception_rationale(img, s.rating)})
            out.append(s)
    return out


def exception_rationale(img: LabelledSample, rating: str) -> str:
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
    images: Sequence[LabelledSample], test_fraction: float = 0.2, seed: int = 0
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


def balance(samples: Sequence[LabelledSample], seed: int = 0) -> list[LabelledSample]:
    """Oversample the minority rating until both ratings are equally common; copies get ids
    ``<id>#2``, ``<id>#3``, ..."""
    by_rating: dict[str, list[LabelledSample]] = defaultdict(list)
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
        extra.append(s.model_copy(update={"id": f"{s.id}#{copies[s.id]}"}))
    return list(samples) + extra


def split_counts(part: Sequence[LabelledSample]) -> dict[str, Any]:
    """What a split holds: samples, images, ratings, categories and augmentations, and the
    ratings per category and per augmentation (the summary's cross-tabs)."""
    by_category: dict[str, Counter] = defaultdict(Counter)
    by_augmentation: dict[str, Counter] = defaultdict(Counter)
    for s in part:
        by_category[s.category][s.rating] += 1
        by_augmentation[s.augmentation or "default"][s.rating] += 1
    return {
        "samples": len(part),
        "images": len({s.image_id for s in part}),
        "ratings": dict(Counter(s.rating for s in part)),
        "categories": dict(Counter(s.category for s in part)),
        "augmentations": dict(Counter(s.augmentation or "default" for s in part)),
        "by_category": {k: dict(v) for k, v in by_category.items()},
        "by_augmentation": {k: dict(v) for k, v in by_augmentation.items()},
    }


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
    from llavaguard import __version__
    from llavaguard.dataset.summary import plot_summary, render_markdown

    formats = check_formats(formats)
    base_policy = Policy.load(policy)
    images = read_labels(labels, base_policy, require_images=True)
    splits = split(images, test_fraction, seed)
    samples = augment(images, recipe, seed=seed)
    parts = {name: [s for s in samples if splits[s.image_id] == name] for name in ("train", "test")}
    if balance_train:
        parts["train"] = balance(parts["train"], seed)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        FORMATS.get(fmt)(out, parts)
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
    summary["splits"] = {name: split_counts(part) for name, part in parts.items()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(render_markdown(summary), encoding="utf-8")
    plot_summary(summary, out / "summary.png")
    return summary
