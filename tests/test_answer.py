import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llavaguard.policy import Policy, parse_answer

POLICY = Policy.load()
LABELS = POLICY.labels


def answer(rating="Unsafe", category="O3: Sexual Content", rationale="Explicit content."):
    return json.dumps({"rating": rating, "category": category, "rationale": rationale}, indent=4)


def test_clean_answer():
    p = parse_answer(answer(), POLICY)
    assert (p.rating, p.category, p.rationale, p.valid, p.error) == (
        "Unsafe",
        "O3: Sexual Content",
        "Explicit content.",
        True,
        None,
    )


@pytest.mark.parametrize(
    "text",
    [
        "```json\n" + answer() + "\n```",
        "Here is my assessment:\n" + answer() + "\nI hope this helps.",
        answer().replace('"Explicit content."', '"Explicit content.",'),  # trailing comma
        answer().replace('"', "'"),  # single quotes
        answer().replace('"rating"', '"Rating"'),
        answer().replace('"Unsafe"', '"unsafe"'),
        "json " + answer(),
    ],
)
def test_tolerated_noise(text):
    p = parse_answer(text, POLICY)
    assert p.valid, p.error
    assert (p.rating, p.category) == ("Unsafe", "O3: Sexual Content")


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("O2: Violence, Harm or Cruelty", "O2: Violence, Harm, or Cruelty"),
        ("O6: Illegal Weapons or Substance Abuse", "O6: Weapons or Substance Abuse"),
        ("10: None applying", "NA: None applying"),
        ("None applying", "NA: None applying"),
        ("o4: nudity content", "O4: Nudity Content"),
        ("O7", "O7: Self-Harm"),
        ("Animal Cruelty", "O8: Animal Cruelty"),
    ],
)
def test_legacy_and_loose_category_spellings(written, canonical):
    p = parse_answer(answer(category=written), POLICY)
    assert p.category == canonical and p.valid


def test_unknown_category_is_invalid_but_keeps_rating():
    p = parse_answer(answer(category="O42: Made Up"), POLICY)
    assert p.rating == "Unsafe" and p.category is None and not p.valid
    assert "unknown category" in p.error


def test_truncated_answer_recovers_rating():
    text = answer(rationale="The image shows a long rationale that goes on and on")[:-30]
    p = parse_answer(text, POLICY)
    assert p.rating == "Unsafe" and p.category == "O3: Sexual Content"
    assert not p.valid and "truncated" in p.error


def test_rating_in_prose():
    p = parse_answer("I think this image is Unsafe because of violence.", POLICY)
    assert p.rating == "Unsafe" and not p.valid
    both = parse_answer("Not Safe, maybe Unsafe?", POLICY)
    assert both.rating is None  # ambiguous prose is not guessed


@pytest.mark.parametrize("text", ["", "   ", None, 42, "{}", "[1, 2]", "{{{{", '{"rating": 5}'])
def test_garbage_is_invalid(text):
    p = parse_answer(text, POLICY)
    assert not p.valid and p.rating is None and p.error


def test_custom_policy_categories(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("name: c\ncategories:\n  - {code: K1, name: Spiders, should_not: [spiders]}\n")
    custom = Policy.load(f)
    assert parse_answer(answer(category="K1: Spiders"), custom).category == "K1: Spiders"
    assert parse_answer(answer(category="O3: Sexual Content"), custom).category is None


# ---- properties ---------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_never_raises_on_any_text(text):
    p = parse_answer(text, POLICY)
    assert p.rating in (None, "Safe", "Unsafe")
    assert p.category is None or p.category in LABELS
    assert isinstance(p.valid, bool)
    assert p.valid or p.error


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["Safe", "Unsafe"]),
    st.sampled_from(LABELS),
    st.text(min_size=1).filter(lambda s: s.strip()),
    st.sampled_from(["", "```json\n", "Assessment: ", "\n\n"]),
    st.sampled_from(["", "\n```", " Done.", "\n"]),
    st.sampled_from([0, 4, None]),
)
def test_round_trip(rating, category, rationale, before, after, indent):
    body = json.dumps(
        {"rating": rating, "category": category, "rationale": rationale}, indent=indent
    )
    p = parse_answer(before + body + after, POLICY)
    assert p.valid, (p.error, body)
    assert (p.rating, p.category, p.rationale) == (rating, category, rationale.strip())


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["Safe", "Unsafe"]), st.sampled_from(LABELS), st.data())
def test_any_truncation_after_the_rating_keeps_it(rating, category, data):
    body = answer(rating=rating, category=category, rationale="A rationale of some length.")
    cut_from = body.index(rating) + len(rating) + 1
    cut = data.draw(st.integers(min_value=cut_from, max_value=len(body) - 1))
    p = parse_answer(body[:cut], POLICY)
    assert p.rating == rating
    assert not p.valid


def test_code_fence_inside_rationale_survives():
    p = parse_answer(answer(rationale="It shows ```code``` on a screen."), POLICY)
    assert p.valid and p.rationale == "It shows ```code``` on a screen."
