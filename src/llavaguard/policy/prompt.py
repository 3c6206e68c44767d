"""Policies: a taxonomy plus a state per category, rendered to the exact prompt text.

Rendering follows the LlavaGuard v1.2 layout (preamble, one block per category, then the
assessment steps with the JSON template), so the built-in policy equals the text the
released models were trained on, byte for byte. A policy's id is the sha256 of that text:
two policies with the same id are, to the model, the same policy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from llavaguard.errors import PolicyError
from llavaguard.policy.taxonomy import (
    BUILTIN_TAXONOMIES,
    DEFAULT_POLICY,
    Category,
    Taxonomy,
    load_builtin,
    load_taxonomy_file,
    taxonomy_from_data,
)


class State(StrEnum):
    DEFAULT = "default"
    ALLOWED = "allowed"  # declared non-violating
    SENSITIVE = "sensitive"  # declared forbidden in full


_STEPS = (
    "Assessment Steps:\n"
    '1. Select a safety "rating". This should be "Unsafe" if the content violates the safety '
    'policy; otherwise, it should be "Safe".\n'
    '2. Assign a policy "category". If none of the policy categories are applicable, select '
    '"{none}".\n'
    '3. Provide a "rationale". Describe the user content and justify why it is considered safe '
    "or unsafe, referring to the specific policy category and its associated guidelines to "
    "illustrate any violations or compliance.\n"
    "To provide your assessment use the following json template:\n"
    "{{\n"
    '    "rating": str<"Unsafe"|"Safe">,\n'
    '    "category": str<{categories}>,\n'
    '    "rationale": str,\n'
    "}}"
)


def parse_codes(codes: str | Iterable[str] | None) -> list[str]:
    """'O3,O6' or ['O3', 'O6'] -> ['O3', 'O6']; empty parts are dropped."""
    if codes is None:
        return []
    parts = codes.split(",") if isinstance(codes, str) else [p for c in codes for p in c.split(",")]
    return [p.strip() for p in parts if p.strip()]


class Policy(BaseModel):
    """What the model is asked to enforce. Immutable; derive variants with ``with_states``."""

    model_config = ConfigDict(frozen=True)

    taxonomy: Taxonomy
    states: Mapping[str, State] = {}

    # --- construction -------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        policy: str | Path | Policy | None = None,
        *,
        allow: str | Iterable[str] | None = None,
        sensitive: str | Iterable[str] | None = None,
    ) -> Policy:
        """A built-in name (default ``llavaguard-v1.2``), a YAML/JSON file, or a Policy.

        ``allow`` and ``sensitive`` take category codes and are applied on top of whatever
        the file itself declares.
        """
        if isinstance(policy, Policy):
            base = policy
        elif policy is None or (isinstance(policy, str) and policy in BUILTIN_TAXONOMIES):
            base = cls(taxonomy=load_builtin(policy or DEFAULT_POLICY))
        else:
            path = Path(policy)
            if not path.exists():
                if isinstance(policy, str) and not policy.endswith((".yaml", ".yml", ".json")):
                    load_builtin(policy)  # raises with the list of built-in names
                raise PolicyError(f"{policy}: policy file not found")
            taxonomy, declared = load_taxonomy_file(path)
            base = cls(taxonomy=taxonomy).with_states(**declared)
        return base.with_states(allow=allow, sensitive=sensitive)

    @classmethod
    def from_data(
        cls,
        data: dict[str, Any],
        *,
        allow: str | Iterable[str] | None = None,
        sensitive: str | Iterable[str] | None = None,
        where: str = "policy",
    ) -> Policy:
        """A custom policy given as data, in the YAML file's shape (name, preamble,
        categories, allow, sensitive); errors start with ``where``."""
        taxonomy, declared = taxonomy_from_data(data, where)
        return (
            cls(taxonomy=taxonomy)
            .with_states(**declared)
            .with_states(allow=allow, sensitive=sensitive)
        )

    def with_states(
        self,
        *,
        allow: str | Iterable[str] | None = None,
        sensitive: str | Iterable[str] | None = None,
    ) -> Policy:
        """A copy with these codes declared allowed / sensitive (others keep their state)."""
        allow_codes, sens_codes = parse_codes(allow), parse_codes(sensitive)
        both = {c.lower() for c in allow_codes} & {c.lower() for c in sens_codes}
        if both:
            raise PolicyError(f"category {sorted(both)[0]} cannot be both allowed and sensitive")
        if not allow_codes and not sens_codes:
            return self
        states = dict(self.states)
        for codes, state in ((allow_codes, State.ALLOWED), (sens_codes, State.SENSITIVE)):
            for code in codes:
                states[self.taxonomy.category(code).code] = state
        return Policy(taxonomy=self.taxonomy, states=states)

    def in_force(self) -> list[str]:
        """Codes of the categories an image can violate (not declared allowed), in order."""
        return [c.code for c in self.taxonomy.categories if self._state(c) is not State.ALLOWED]

    def only(self, code: str) -> Policy:
        """This policy with every other category in force declared allowed: the question
        "does the image violate ``code``?" (``code`` keeps its state: default or sensitive)."""
        keep = self.taxonomy.category(code).code
        return self.with_states(allow=[c for c in self.in_force() if c != keep])

    # --- what the model sees ------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.taxonomy.name

    def code_of(self, label: str) -> str | None:
        """The code of the category a label names ('O3: Sexual Content' -> 'O3'); None for
        the none category or a label this policy does not have."""
        code = label.split(":", 1)[0].strip()
        found = self.taxonomy.by_code().get(code.lower())
        return code if found is not None and found.code == code else None

    def state(self, code: str) -> State:
        return self.states.get(self.taxonomy.category(code).code, State.DEFAULT)

    @property
    def allowed(self) -> list[str]:
        return [c.code for c in self.taxonomy.categories if self._state(c) is State.ALLOWED]

    @property
    def sensitive(self) -> list[str]:
        return [c.code for c in self.taxonomy.categories if self._state(c) is State.SENSITIVE]

    def _state(self, category: Category) -> State:
        """The state of one of this policy's own categories: no lookup by code needed."""
        return self.states.get(category.code, State.DEFAULT)

    @property
    def categories(self) -> list[Category]:
        return list(self.taxonomy.categories)

    @property
    def labels(self) -> list[str]:
        """Every category string a valid answer may carry, the none category last."""
        return [c.label for c in self.taxonomy.categories] + [self.taxonomy.none_category]

    def guidelines(self, category: Category) -> str:
        state = self._state(category)
        if state is State.ALLOWED:
            return category.allowed
        if state is State.SENSITIVE:
            return category.sensitive
        return category.default

    @cached_property
    def text(self) -> str:
        """The prompt text, exactly as the model receives it."""
        blocks = "".join(f"{c.label}: \n{self.guidelines(c)}\n" for c in self.taxonomy.categories)
        steps = _STEPS.format(
            none=self.taxonomy.none_category,
            categories="|".join(f'"{label}"' for label in self.labels),
        )
        return (self.taxonomy.preamble + blocks + steps).strip()

    def render(self) -> str:
        return self.text

    @cached_property
    def id(self) -> str:
        """sha256 of the rendered text: stable across runs, machines and versions."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def answer_schema(self, rationale_max_chars: int = 2000) -> dict[str, Any]:
        """JSON schema of a valid answer under this policy, keys in the trained order."""
        return {
            "type": "object",
            "properties": {
                "rating": {"type": "string", "enum": ["Safe", "Unsafe"]},
                "category": {"type": "string", "enum": self.labels},
                "rationale": {"type": "string", "maxLength": rationale_max_chars},
            },
            "required": ["rating", "category", "rationale"],
            "additionalProperties": False,
        }

    def describe(self) -> str:
        """A short human label, e.g. 'llavaguard-v1.2 (allow O3; sensitive O6)'."""
        parts = []
        if self.allowed:
            parts.append("allow " + ",".join(self.allowed))
        if self.sensitive:
            parts.append("sensitive " + ",".join(self.sensitive))
        return self.name + (f" ({'; '.join(parts)})" if parts else "")
