"""Policy variants a model was not trained with, and the label each one implies.

The same labelled images are judged under changed policies; the expected answer follows from
the change: a sample whose own category is declared allowed must be Safe, one whose category
is declared sensitive must be Unsafe, and changes to other categories, to the order of the
categories or to their codes must not change the answer. Guards that overfit their training
policy fail these; this makes it measurable (reference, sections 4 and 8).

Each kind is a policy edit (``policy.edits``, the same edits the training augmentations make)
named in ``KINDS``; a sample it does not apply to is skipped. Draws are seeded per sample and
kind (``edit_rng``), so a sample's variants do not depend on the other samples.
"""

from __future__ import annotations

from collections.abc import Sequence

from llavaguard.inputs.labels import LabelledSample
from llavaguard.policy import edits
from llavaguard.policy.edits import Edit, edit_rng
from llavaguard.registry import Registry

# name -> edit; cf. the augmentations of dataset.build: allow-own is v2a, sensitive-own v4,
# allow-others v3, sensitive-others v5
KINDS: Registry[Edit] = Registry(
    "variant",
    {
        "allow-own": edits.allow_own_and_others,
        "sensitive-own": edits.sensitive_own,
        "allow-others": edits.allow_others,
        "sensitive-others": edits.sensitive_others,
        "mixed": edits.mixed,
        "shuffle": edits.shuffle,
        "rename": edits.rename,
    },
    also=("all",),
)


def make_variants(
    samples: Sequence[LabelledSample], kinds: Sequence[str], seed: int = 0
) -> list[LabelledSample]:
    """For each default-policy sample and each kind, one variant (where the kind applies),
    with id ``<id>@<kind>``.

    ``kinds`` may be ``["all"]``. Seeded: the same inputs give the same variants.
    """
    names = KINDS.names() if list(kinds) == ["all"] else list(kinds)
    KINDS.get_many(names)  # an unknown name stops here, before any work
    out = []
    for s in samples:
        if not s.default_policy:
            continue
        for name in names:
            made = KINDS[name](s.policy, s.category, edit_rng(seed, s.id, name))
            if made is not None:
                policy, category = made
                out.append(s.under(policy, category, id=f"{s.id}@{name}", variant=name))
    return out
