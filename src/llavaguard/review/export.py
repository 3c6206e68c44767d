"""The reviewed items as a labelled set: what reviewers decided, under the policy the results
were judged by, in the one labels format (``inputs.labels``), so ``dataset build``,
``dataset rationales`` and ``evaluate run`` read it as it is.

An image that lives in a tar shard (``shard.tar:member``) is copied out beside the labels
(``<labels>-images/``), so every label names a file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llavaguard.errors import ConfigError
from llavaguard.inputs.labels import LabelledSample, write_labels
from llavaguard.inputs.units import safe_name
from llavaguard.policy import Policy, canonical_category
from llavaguard.review.corrections import Correction, Corrections
from llavaguard.review.rows import ReviewRows, read_key


def export_reviewed(results: Path, out: Path, policy: str | Path | None = None) -> int:
    """Write the items with a correction in force to ``out`` (JSONL); how many. ``policy``:
    the policy the results were judged by, where they do not say it themselves (an assess
    file); it must be the one they were judged by (same id)."""
    results, out = Path(results), Path(out)
    corrections = Corrections(results).all()
    if not corrections:
        raise ConfigError(f"{results}: no reviewed items to export yet")
    pol = judged_policy(results, policy)
    view = ReviewRows(results)
    model = view.lookup([c.id for c in corrections])
    samples, extra = [], []
    for c in corrections:
        row = model.get(c.id)
        if row is None:
            raise ConfigError(f"{results}: reviewed item {c.id!r} is not in the results")
        image = _image_file(row["key"], out.with_name(f"{out.stem}-images"))
        samples.append(LabelledSample(id=c.id, image=image, rating=c.rating,
                                      category=_category(c, pol), policy=pol))  # fmt: skip
        extra.append({"reviewer": c.reviewer, "reviewed_at": c.time,
                      "model_rating": row.get("rating"), "model_category": row.get("category"),
                      "model_score": row.get("score")})  # fmt: skip
    write_labels(samples, out, extra)
    return len(samples)


def _category(c: Correction, policy: Policy) -> str:
    """The reviewer's category as one of the policy's labels; a Safe item with none given
    is one where none applies."""
    found = canonical_category(c.category, policy)
    if found is None and c.rating == "Safe" and not c.category:
        return policy.taxonomy.none_category
    if found is None:
        raise ConfigError(f"reviewed item {c.id!r}: {c.category!r} is not a category of the policy")
    return found


def judged_policy(results: Path, given: str | Path | None = None) -> Policy:
    """The policy the results were judged by: a results folder's manifest names it; an
    assess file gives only its id, so the caller names the policy and the id must match."""
    from llavaguard.guard.spec import GuardSpec

    wanted, spec = _judged_by(results)
    if given is not None:
        pol = Policy.load(str(given))
    elif spec is not None:
        pol = GuardSpec(**{k: spec[k] for k in ("policy", "allow", "sensitive") if k in spec}
                        ).load_policy()  # fmt: skip
    else:
        pol = Policy.load()
    if wanted is not None and pol.id != wanted:
        raise ConfigError(
            f"{results} was judged under policy id {wanted[:12]}, not {pol.id[:12]}: name the "
            "policy it was judged by with --policy"
        )
    return pol


def _judged_by(results: Path) -> tuple[str | None, dict[str, Any] | None]:
    """(policy id, guard record) of the results, as far as they say."""
    if results.is_dir():
        from llavaguard.annotate.store import ResultStore

        doc = ResultStore(results).describe() or {}
        return doc.get("identity", {}).get("policy_id"), doc.get("params", {}).get("guard")
    with open(results, encoding="utf-8") as f:
        first = json.loads(f.readline() or "{}")
    return first.get("policy_id"), None


def _image_file(key: str, folder: Path) -> str:
    """A file the label can name: the image's own path, or a tar member copied out."""
    shard, sep, member = key.rpartition(":")
    if not sep or not shard.endswith(".tar"):
        return key
    folder.mkdir(parents=True, exist_ok=True)
    dest = folder / safe_name(f"{Path(shard).stem}-{member}")
    if not dest.exists():
        dest.write_bytes(read_key(key))
    return str(dest)
