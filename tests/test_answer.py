import json
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llavaguard import Guard
from llavaguard.engines import Engine
from llavaguard.policy import Policy, parse_answer
from llavaguard.policy.answer import MAX_ANSWER_CHARS

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


# ---- fail-safe ratings (issue 13, item 14) -----------------------------------------------


@pytest.mark.parametrize(
    "rating", ["Not safe", "Not Unsafe", "Safe or Unsafe", "Unsafe/Safe", "safe?", "Safe.",
               "Probably Safe", "Saf", "", "Safe Safe", "SAFE!"]
)  # fmt: skip
def test_a_rating_that_is_not_exactly_a_rating_word_is_invalid(rating):
    p = parse_answer(answer(rating=rating, category="NA: None applying"), POLICY)
    assert p.rating is None and not p.valid
    assert "is not Safe or Unsafe" in p.error and json.dumps(rating) in p.error


@pytest.mark.parametrize("rating", [" safe ", "SAFE", "\tUnsafe\n", "unsafe"])
def test_case_and_spaces_around_the_rating_word_are_tolerated(rating):
    p = parse_answer(answer(rating=rating), POLICY)
    assert p.valid and p.rating == rating.strip().capitalize()


@pytest.mark.parametrize(
    "text",
    [
        '{"rating": "Unsafe", "rating": "Safe", "category": "NA: None applying", "rationale": "r"}',
        '{"rating": "Safe", "rating": "Safe", "category": "NA: None applying", "rationale": "r"}',
        '{"Rating": "Unsafe", "rating": "Safe", "category": "NA: None applying", "rationale": "r"}',
        "{'rating': 'Unsafe', 'rating': 'Safe', 'category': 'NA: None applying', 'rationale': 'r'}",
        answer(rating="Unsafe") + '\n{"rating": "Safe"}',  # a second answer after the first
        "rating: Unsafe\nrating: Safe",
    ],
)
def test_a_repeated_rating_is_invalid_never_the_last_one(text):
    p = parse_answer(text, POLICY)
    assert p.rating is None and not p.valid and "rating given more than once" in p.error


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("This image is not safe.", "negates"),
        ("The content is not unsafe at all.", "negates"),
        ("The image is safe.", "only from a rating field"),
        ("Rating: Safe or Unsafe", "is not Safe or Unsafe"),
        ("Safe and unsafe parts.", "both ratings"),
    ],
)
def test_prose_never_reads_as_safe(text, why):
    p = parse_answer(text, POLICY)
    assert p.rating is None and not p.valid and why in p.error


def test_unsafe_prose_is_kept_but_invalid():
    p = parse_answer("This image is clearly unsafe.", POLICY)
    assert p.rating == "Unsafe" and not p.valid and "recovered from text" in p.error


@pytest.mark.parametrize(
    "text",
    [
        '{"category": "NA: None applying", "rationale": "r"} rating: Safe',
        '{"category": "NA: None applying", "rationale": "The rating: Safe, I think"}',
    ],
)
def test_an_object_without_a_rating_is_not_searched_for_one(text):
    p = parse_answer(text, POLICY)
    assert p.rating is None and not p.valid and "missing rating" in p.error


@pytest.mark.parametrize("depth", [1000, 40_000])  # 80,000 characters: within the cut
@pytest.mark.parametrize("where", ["before", "after"])
def test_deep_nesting_keeps_a_top_level_rating(depth, where):
    deep = '"x": ' + "[" * depth + "]" * depth
    fields = '"rating": "Unsafe", "category": "O3: Sexual Content", "rationale": "r"'
    text = "{" + (f"{deep}, {fields}" if where == "before" else f"{fields}, {deep}") + "}"
    p = parse_answer(text, POLICY)
    assert (p.rating, p.category, p.rationale) == ("Unsafe", "O3: Sexual Content", "r")
    assert not p.valid and "nested values" in p.error


def test_huge_answers_are_cut_and_keep_their_start():
    p = parse_answer(
        '{"rating": "Unsafe", "category": "O1", "rationale": "' + "a " * 500_000, POLICY
    )
    assert p.rating == "Unsafe" and p.category.startswith("O1") and not p.valid
    assert f"longer than {MAX_ANSWER_CHARS} characters" in p.error
    assert len(p.rationale) < MAX_ANSWER_CHARS


@pytest.mark.parametrize(
    ("text", "rationale"),
    [
        (answer(rationale="x").replace('"x"', '"The sign says "STOP" here"'),
         'The sign says "STOP" here'),
        (answer(rationale="x").replace(",\n", "\n"), "x"),  # commas missing between lines
        ("{'rating': 'Unsafe', 'category': 'O3: Sexual Content', 'rationale': \"It's bad\"}",
         "It's bad"),
        (answer(rationale="x").replace('"x"', '"caf\\u00e9 \\ud83d\\ude00",'), "café 😀"),
    ],
)  # fmt: skip
def test_lenient_reading_of_common_breakage(text, rationale):
    p = parse_answer(text, POLICY)
    assert p.valid, p.error
    assert (p.rating, p.category, p.rationale) == ("Unsafe", "O3: Sexual Content", rationale)


class _Answers(Engine):
    """An engine that answers with the given texts, in turn."""

    name = "answers"
    model_id = "answers"

    def __init__(self, texts):
        self.texts = list(texts)

    def generate(self, requests, config=None):
        return [self.texts.pop(0) for _ in requests]


def test_guard_keeps_unreadable_answers_invalid_and_filters_them_out():
    from PIL import Image

    texts = [answer(rating="Not safe", category="NA: None applying"), answer(rating="Safe")]
    guard = Guard(_Answers(texts))
    images = [Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8))]
    result = guard.filter(images)
    assert [a.rating for a in result.assessments] == [None, "Safe"]
    assert [a.valid for a in result.assessments] == [False, True]
    assert result.keep == [False, True]  # an unreadable rating fails closed


# ---- properties of the fail-safe reading --------------------------------------------------

_SAFE_FIELD = re.compile(r"""rating["']?\s*[:=]\s*["']?\s*safe\s*(?:["',}\n]|$)""", re.I)


RATING_LIKE = st.text() | st.builds(
    lambda a, w, b: a + w + b,
    st.sampled_from(["", " ", "not ", "Not ", "maybe ", "Safe or ", "\n"]),
    st.sampled_from(["Safe", "Unsafe", "safe", "UNSAFE", "sAfE"]),
    st.sampled_from(["", " ", ".", " or Unsafe", "?", "!", "\t", " Safe"]),
)


@settings(max_examples=300, deadline=None)
@given(RATING_LIKE, st.sampled_from(LABELS))
def test_safe_only_when_the_rating_value_is_exactly_safe(rating, category):
    p = parse_answer(answer(rating=rating, category=category), POLICY)
    assert (p.rating == "Safe") == (rating.strip().lower() == "safe")
    assert (p.rating == "Unsafe") == (rating.strip().lower() == "unsafe")


_ATOMS = ["{", "}", "[", "]", '"', "'", ":", ",", " ", "\n", "\\", "rating", "Safe",
          "Unsafe", "not", "null", "```", "=", "category", "rationale", "NA: None applying",
          "\\u"]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_ATOMS) | st.text(max_size=3), max_size=40))
def test_safe_never_comes_from_anything_but_a_safe_rating_field(parts):
    text = "".join(parts)
    p = parse_answer(text, POLICY)
    assert p.rating in (None, "Safe", "Unsafe") and (p.valid or p.error)
    if p.rating == "Safe":
        assert _SAFE_FIELD.search(text), text


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.sampled_from(_ATOMS), min_size=1, max_size=6),
    st.sampled_from(["", '{"rating": "Unsafe", ', "```json\n{"]),
    st.integers(min_value=10_000, max_value=300_000),
)
def test_adversarial_answers_are_read_in_bounded_time(unit, head, size):
    text = head + "".join(unit) * (size // len("".join(unit)) + 1)
    start = time.perf_counter()
    p = parse_answer(text, POLICY)
    # Measured: 0.08 s at most for 100,000 characters; before, 44 s to 224 s.
    assert time.perf_counter() - start < 5, (unit, head)
    assert p.rating != "Safe" or _SAFE_FIELD.search(text)
