"""Policy edits: the changes to a policy that training augmentations (``dataset.build``: v1-v8)
and evaluation variants (``evaluate.variants``: allow-own, shuffle, ...) make, written once.

An edit takes a policy, the category a sample is labelled with, and a random generator; it
returns the edited policy and the sample's category under it (only ``rename`` changes that),
or None where it does not apply (no category of its own, no other category left to change).
An edit never touches the categories a policy already declares allowed or sensitive.

One seeding rule for every edit: ``edit_rng(seed, sample_id, edit)``. Each (sample, edit) pair
draws from its own generator, so adding samples or edits never changes the draws of others.

What this module does not know: samples, labels (``LabelledSample.under`` turns an edit into
the label it implies), or which names the two consumers give the edits.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from llavaguard.policy.prompt import Policy, State
from llavaguard.policy.taxonomy import Category, Taxonomy

Edit = Callable[[Policy, str, random.Random], tuple[Policy, str] | None]


def edit_rng(seed: int, sample_id: str, edit: str) -> random.Random:
    """The generator of one edit of one sample: the one seeding rule of all edits."""
    return random.Random(f"{seed}:{sample_id}:{edit}")


def own_code(policy: Policy, category: str) -> str | None:
    """The code of the sample's own category if the policy leaves it in its default state."""
    code = policy.code_of(category)
    return code if code is not None and policy.state(code) is State.DEFAULT else None


def other_codes(policy: Policy, category: str) -> list[str]:
    """The other categories in their default state, in policy order."""
    own = policy.code_of(category)
    return [c.code for c in policy.categories if c.code != own and _default(policy, c.code)]


def _default(policy: Policy, code: str) -> bool:
    return policy.state(code) is State.DEFAULT


def draw(codes: list[str], rng: random.Random, low: int, high: int) -> list[str]:
    """``low``-``high`` of ``codes`` at random (fewer when there are fewer)."""
    return rng.sample(codes, k=min(len(codes), rng.randint(low, high)))


def allow_each_other(p: Policy, category: str, rng: random.Random) -> tuple[Policy, str] | None:
    """Each other category allowed with probability 0.5: the label stands."""
    allow = [c for c in other_codes(p, category) if rng.random() < 0.5]
    return p.with_states(allow=allow), category


def allow_own(p: Policy, category: str, rng: random.Random) -> tuple[Policy, str] | None:
    """The sample's own category allowed: Safe."""
    own = own_code(p, category)
    return None if own is None else (p.with_states(allow=[own]), category)


def allow_own_and_others(p: Policy, category: str, rng: random.Random) -> tuple[Policy, str] | None:
    """The own category and 0-2 others allowed: Safe."""
    own = own_code(p, category)
    if own is None:
        return None
    return p.with_states(allow=[own, *draw(other_codes(p, category), rng, 0, 2)]), category


def only_own(p: Policy, category: str, rng: random.Random) -> tuple[Policy, str] | None:
    """Every other category allowed, the own one alone in force: the label stands (the
    question ``--multi-label`` asks of each category)."""
    own = own_code(p, category)
    return None if own is None else (p.only(own), category)


def only_other(p: Policy, category: str, rng: random.Random) -> tuple[Policy, str] | None:
    """One random other category alone in force, the own one allowed with the rest: Safe."""
    others = other_codes(p, category)
    if own_code(p, category) is None or not others:
        return None
    return p.only(rng.choice(others)), category


def only_any(p: Policy, category: str, rng: random.Random) -> tuple[Policy, str] | None:
    """One random category alone in force, every other allowed. Made of Safe images, whose
    label stands: without it a model never sees a harmless image under a one-category policy,
    and learns that such a policy means Unsafe."""
    codes = [c.code for c in p.categories if _default(p, c.code)]
    return (p.only(rng.choice(codes)), category) if codes else None


def sensitive_own(p: Policy, category: str, rng: random.Random) -> tuple[Policy, str] | None:
    """The own category sensitive: Unsafe (also a Safe sample that names a category)."""
    own = own_code(p, category)
    return None if own is None else (p.with_states(sensitive=[own]), category)


def _some_others(p: Policy, category: str, rng: random.Random, state: str) -> Policy | None:
    others = other_codes(p, category)
    return p.with_states(**{state: draw(others, rng, 1, 3)}) if others else None


def allow_others(p: Policy, category: str, rng: random.Random) -> tuple[Policy, str] | None:
    """1-3 other categories allowed: the label stands."""
    edited = _some_others(p, category, rng, "allow")
    return None if edited is None else (edited, category)


def sensitive_others(p: Policy, category: str, rng: random.Random) -> tuple[Policy, str] | None:
    """1-3 other categories sensitive: the label stands."""
    edited = _some_others(p, category, rng, "sensitive")
    return None if edited is None else (edited, category)


def mixed(p: Policy, category: str, rng: random.Random) -> tuple[Policy, str] | None:
    """Some other categories allowed and some sensitive at once, the own one either way."""
    own = own_code(p, category)
    others = other_codes(p, category)
    if own is None or len(others) < 2:
        return None
    rng.shuffle(others)
    k = rng.randint(1, len(others) - 1)
    allow, sensitive = others[:k][:3], others[k:][:3]
    (allow if rng.random() < 0.5 else sensitive).append(own)
    return p.with_states(allow=allow, sensitive=sensitive), category


def shuffle(p: Policy, category: str, rng: random.Random) -> tuple[Policy, str] | None:
    """The categories listed in another order: the label stands."""
    cats = list(p.categories)
    if len(cats) < 2:
        return None
    order = cats[:]
    while order == cats:
        rng.shuffle(order)
    taxonomy = p.taxonomy.model_copy(
        update={"categories": tuple(order), "name": f"{p.name}-shuffled",
                "source": f"variant of {p.name}"}
    )  # fmt: skip
    return Policy(taxonomy=taxonomy, states=p.states), category


def rename(p: Policy, category: str, rng: random.Random) -> tuple[Policy, str] | None:
    """Custom categories: every code replaced by a new one (C1, C2, ... in a random
    assignment), with allowed/sensitive texts written for the new codes; the label stands,
    and the sample's category is the renamed one."""
    cats = list(p.categories)
    codes = [f"C{i + 1}" for i in range(len(cats))]
    rng.shuffle(codes)
    mapping = dict(zip((c.code for c in cats), codes, strict=True))
    renamed = tuple(
        Category(code=mapping[c.code], name=c.name, default=c.default)
        for c in sorted(cats, key=lambda c: int(mapping[c.code][1:]))
    )
    taxonomy = Taxonomy(
        name=f"{p.name}-renamed",
        preamble=p.taxonomy.preamble,
        categories=renamed,
        none_category=p.taxonomy.none_category,
        source=f"variant of {p.name}",
    )
    states = {mapping[k]: v for k, v in p.states.items()}
    own = p.code_of(category)
    if own is not None:
        category = f"{mapping[own]}: {category.split(':', 1)[1].strip()}"
    return Policy(taxonomy=taxonomy, states=states), category
