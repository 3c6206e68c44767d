"""The grammar a vLLM server gets: the trained layout, a pinned prefix, a token budget."""

from __future__ import annotations

import json

import pytest

from llavaguard.engines.constrain import fit_strings, json_ebnf, pin_prefix
from llavaguard.errors import ConfigError, EngineError
from llavaguard.policy import Policy, answer_prefix


def accepts(ebnf: str, text: str) -> bool:
    import xgrammar as xgr

    return xgr.testing._is_grammar_accept_string(xgr.Grammar.from_ebnf(ebnf), text)


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load(None)


def answer(policy: Policy, rating: str = "Unsafe", k: int = 2, rationale: str = "why") -> dict:
    return {"rating": rating, "category": policy.labels[k], "rationale": rationale}


def test_the_grammar_takes_the_trained_layout_and_nothing_else(policy):
    ebnf = json_ebnf(policy.answer_schema(2000))
    good = answer(policy)
    assert accepts(ebnf, json.dumps(good, indent=4))
    assert not accepts(ebnf, json.dumps(good))  # compact: not how the models were trained
    assert not accepts(ebnf, json.dumps(good, indent=4).replace("{\n", "{\n\n"))  # whitespace
    assert not accepts(ebnf, json.dumps({**good, "rating": "Maybe"}, indent=4))


def test_a_bad_schema_is_one_line(policy):
    with pytest.raises(ConfigError, match="invalid JSON schema") as e:
        json_ebnf({"type": "object", "properties": {"a": {"type": "nonsense"}}})
    assert "\n" not in str(e.value)


def test_pinning_the_scored_prefix_makes_the_answer_start_with_it(policy):
    schema = policy.answer_schema(2000)
    prefix = answer_prefix("Unsafe", policy.labels[2])
    ebnf = json_ebnf(pin_prefix(schema, prefix))
    pinned = json.dumps(answer(policy), indent=4)
    assert pinned.startswith(prefix)
    assert accepts(ebnf, pinned)
    assert not accepts(ebnf, json.dumps(answer(policy, k=3), indent=4))  # another category
    assert not accepts(ebnf, json.dumps(answer(policy, rating="Safe"), indent=4))


@pytest.mark.parametrize(
    "prefix",
    [
        '{"rating": "',  # compact, not the trained layout
        '{\n    "rating": "Unsafe",\n    "category": "O',  # inside a value
        '{\n    "rationale": "',  # not the schema's property order
        "not json",
    ],
)
def test_a_prefix_that_cannot_be_pinned_is_refused(policy, prefix):
    with pytest.raises(EngineError, match="cannot pin"):
        pin_prefix(policy.answer_schema(2000), prefix)


def test_the_rationale_is_capped_so_the_answer_fits_the_token_budget(policy):
    capped = fit_strings(policy.answer_schema(2000), 200)
    limit = capped["properties"]["rationale"]["maxLength"]
    longest = max(policy.labels, key=len)
    whole = json.dumps(answer(policy, rationale="x" * limit) | {"category": longest}, indent=4)
    assert len(whole) <= 200  # at least one character per token: it fits in 200 tokens
    assert accepts(json_ebnf(capped), json.dumps(answer(policy, rationale="x" * limit), indent=4))
    assert not accepts(
        json_ebnf(capped), json.dumps(answer(policy, rationale="x" * (limit + 1)), indent=4)
    )
    # a larger budget keeps the policy's own limit
    assert (
        fit_strings(policy.answer_schema(300), 5000)["properties"]["rationale"]["maxLength"] == 300
    )
