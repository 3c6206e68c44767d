"""Policies: taxonomies, their rendering to prompt text, and the reading of model answers."""

from llavaguard.policy.answer import (
    RATINGS,
    ParsedAnswer,
    answer_prefix,
    canonical_category,
    parse_answer,
)
from llavaguard.policy.prompt import Policy, State, parse_codes
from llavaguard.policy.taxonomy import (
    DEFAULT_POLICY,
    Category,
    Taxonomy,
    list_builtin,
    load_builtin,
)

__all__ = [
    "DEFAULT_POLICY",
    "RATINGS",
    "Category",
    "ParsedAnswer",
    "Policy",
    "State",
    "Taxonomy",
    "answer_prefix",
    "canonical_category",
    "list_builtin",
    "load_builtin",
    "parse_answer",
    "parse_codes",
]
