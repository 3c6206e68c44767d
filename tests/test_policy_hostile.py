"""Policy files and inline policies written to break the loader: each is one PolicyError line
(exit 2 from the command), never a traceback, and a large policy renders in linear time."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llavaguard.errors import PolicyError
from llavaguard.policy import Policy, Taxonomy, parse_answer
from llavaguard.policy.loading import MAX_DEPTH

from conftest import cli

CATEGORIES = "categories: [{code: A1, name: Apples, should_not: [apples]}]\n"


def write(tmp_path, text: str, name: str = "p.yaml"):
    f = tmp_path / name
    f.write_text(text, encoding="utf-8")
    return f


def refused(f, match: str) -> str:
    with pytest.raises(PolicyError, match=match) as info:
        Policy.load(f)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("name: x\nextra: " + "[" * 5000 + "]" * 5000 + "\n" + CATEGORIES, "nested deeper"),
        ("name: x\nextra: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n" + CATEGORIES, "nested"),
        (
            "name: x\n" + CATEGORIES + "extra:\n"
            + "".join("  " * i + "-\n" for i in range(1, 2000)),
            "nested deeper",
        ),
        ("name: x\n" + CATEGORIES + "extra: " + "9" * 5000 + "\n", "number of 5000 characters"),
    ],
    ids=["flow-5000", "flow-mappings-5000", "block-2000", "int-5000-digits"],
)  # fmt: skip
def test_deep_or_huge_yaml_is_one_line(tmp_path, text, match):
    message = refused(write(tmp_path, text), match)
    assert message.startswith(str(tmp_path / "p.yaml") + ":")  # the file and its line


def test_deep_json_policy_file_is_one_line(tmp_path):
    doc = '{"name": "x", "extra": ' + "[" * 100_000 + "]" * 100_000 + ', "categories": []}'
    refused(write(tmp_path, doc, "p.json"), "nested deeper")


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("name: x\nname: y\n" + CATEGORIES, 2, "'name' (first on line 1)"),
        (
            "name: x\ncategories:\n  - code: A1\n    name: A\n    name: B\n    should_not: [a]\n",
            5,
            "'name' (first on line 4)",
        ),
        ("name: x\n" + CATEGORIES + "allow: [A1]\n'allow': []\n", 4, "'allow'"),
        ("{name: x, name: x, categories: []}\n", 1, "'name'"),
    ],
)
def test_duplicate_keys_are_refused_naming_key_and_line(tmp_path, text, line, key):
    f = write(tmp_path, text)
    message = refused(f, "duplicate key")
    assert message.startswith(f"{f}:{line}: invalid YAML: duplicate key {key}")


def test_merge_keys_may_be_overridden(tmp_path):
    text = (
        "name: x\nbase: &b {name: Apples, should_not: [apples]}\n"
        "categories:\n  - {<<: *b, code: A1, name: Red apples}\n"
    )
    with pytest.raises(PolicyError, match="base"):  # an unknown key, not a duplicate
        Policy.load(write(tmp_path, text))


def test_recursive_alias_is_one_line(tmp_path):
    refused(write(tmp_path, "name: x\n" + CATEGORIES + "extra: &a [*a]\n"), "contains itself")


def test_aliases_cannot_nest_past_the_bound(tmp_path):
    # Each anchor stays shallow, but chained aliases nest the data deeper than any one.
    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [[[*a{i - 1}]]]" for i in range(1, 40)]
    refused(write(tmp_path, "name: x\n" + CATEGORIES + "\n".join(lines) + "\n"), "nested deeper")


@pytest.mark.parametrize("none", ["''", "'  '", '"a\\nb"', "'say \"none\"'"])
def test_none_category_must_be_a_name(tmp_path, none):
    f = write(tmp_path, f"name: x\nnone_category: {none}\n" + CATEGORIES)
    message = refused(f, "none_category")
    assert message.startswith(f"{f}: none_category: ")


@pytest.mark.parametrize("name", ["''", "'   '"])
def test_blank_names_are_refused(tmp_path, name):
    refused(write(tmp_path, f"name: {name}\n" + CATEGORIES), "name: must be one line")
    bad_category = f"name: x\ncategories: [{{code: A1, name: {name}, should_not: [a]}}]\n"
    refused(write(tmp_path, bad_category), "category A1.name: name must be one line")


def test_a_blank_none_category_cannot_reach_answers():
    # Before: accepted, and every answer naming it then carried category null.
    with pytest.raises(PolicyError, match="none_category"):
        Policy.from_data({"none_category": "", "categories": [
            {"code": "A1", "name": "Apples", "should_not": ["apples"]}]})  # fmt: skip
    ok = Policy.from_data({"categories": [{"code": "A1", "name": "A", "should_not": ["a"]}]})
    answer = json.dumps({"rating": "Safe", "category": "NA: None applying", "rationale": "r"})
    assert parse_answer(answer, ok).category == "NA: None applying"


def nested(depth: int) -> list:
    """A list nested ``depth`` levels, built without recursion."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 900, 100_000])
def test_inline_policy_nested_deep_is_a_policy_error(depth):
    cats = [{"code": "A1", "name": "Apples", "should_not": ["apples"]}]
    with pytest.raises(PolicyError, match=f"request policy: nested deeper than {MAX_DEPTH}"):
        Policy.from_data({"categories": cats, "extra": nested(depth)}, where="request policy")
    with pytest.raises(PolicyError, match="nested deeper"):  # as a category's code, too
        Policy.from_data({"categories": [{**cats[0], "code": nested(depth)}]})


def test_inline_policy_at_the_bound_is_judged_on_its_fields():
    cats = [{"code": "A1", "name": "Apples", "should_not": ["apples"]}]
    with pytest.raises(PolicyError, match="extra"):  # refused for the unknown key only
        Policy.from_data({"categories": cats, "extra": nested(MAX_DEPTH - 1)})


def test_cli_exit_2_with_one_line_for_each_hostile_file(tmp_path):
    files = {
        "deep.yaml": "name: x\nextra: " + "[" * 5000 + "]" * 5000 + "\n" + CATEGORIES,
        "int.yaml": "name: x\n" + CATEGORIES + "extra: " + "9" * 5000 + "\n",
        "dup.yaml": "name: x\nname: y\n" + CATEGORIES,
        "none.yaml": "name: x\nnone_category: ''\n" + CATEGORIES,
    }
    for name, text in files.items():
        out = cli("policy", "show", "--policy", str(write(tmp_path, text, name)))
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2, (name, out.stderr[-300:])
        assert len(lines) == 1 and name in lines[0] and "Traceback" not in out.stderr
        assert out.stdout == ""


# ---- properties -----------------------------------------------------------------------------

YAML_BITS = ["[", "]", "{", "}", ":", ", ", "- ", "\n", "  ", "&a ", "*a", "<<: ", "!!int ",
             "!!binary ", "!!timestamp ", "'", '"', "#", "name", "categories", "code", "9" * 50,
             "2001-13-45", "0x", "1e999", "\t", "\x00", "? ", "|", ">", "%YAML 1.1\n", "---\n",
             "...\n", "!!python/object:os.system ", "\\u"]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(YAML_BITS) | st.text(max_size=5), max_size=60),
    st.sampled_from(["p.yaml", "p.json"]),
)
def test_loader_raises_only_policy_errors(tmp_path_factory, bits, name):
    f = tmp_path_factory.mktemp("fuzz") / name
    f.write_text("".join(bits), encoding="utf-8")
    try:
        Policy.load(f)
    except PolicyError as e:
        assert "\n" not in str(e)


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=30,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "name": JSONISH, "preamble": JSONISH, "none_category": JSONISH, "allow": JSONISH,
            "sensitive": JSONISH, "extra": JSONISH,
            "categories": st.lists(st.fixed_dictionaries({}, optional={
                "code": JSONISH, "name": JSONISH, "should_not": JSONISH, "can": JSONISH,
                "default": JSONISH}), max_size=3),
        },
    )
)  # fmt: skip
def test_inline_policies_raise_only_policy_errors(data):
    try:
        Policy.from_data(data)
    except PolicyError as e:
        assert "\n" not in str(e)


def test_lookups_are_indexed():
    cats = [{"code": f"C{i}", "name": f"N{i}", "should_not": ["x"]} for i in range(3)]
    t = Taxonomy(name="t", categories=cats)
    assert t.category(" c1 ").code == "C1"
    shuffled = t.model_copy(update={"categories": tuple(reversed(t.categories))})
    assert t.by_code() is t.by_code()  # built once
    assert shuffled.category("C2") is t.category("C2")
    assert shuffled.by_code() is not t.by_code()  # a copy with other categories has its own
    assert t == Taxonomy(name="t", categories=cats)  # the index is not part of equality


def test_unknown_code_error_stays_short():
    cats = [{"code": f"C{i}", "name": f"N{i}", "should_not": ["x"]} for i in range(5000)]
    policy = Policy(taxonomy=Taxonomy(name="big", categories=cats))
    with pytest.raises(PolicyError, match=r"valid: C0, C1, .*C19, \.\.\. \(5000 in all\)") as e:
        policy.with_states(allow="Z9")
    assert len(str(e.value)) < 300


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (
            '{"name": "x", "name": "y", "categories": []}',
            r"p\.json: invalid JSON: duplicate key 'name'",
        ),
        ('{"name": "x", "n": ' + "9" * 5000 + "}", "number of 5000 characters"),
        ('{"name": "x",\n "categories": [}', r"p\.json:2: invalid JSON: "),
        ('{"name": "x", "extra": ' + "[" * 100 + "]" * 100 + "}", "nested deeper than 32"),
    ],
)
def test_json_policy_files_get_the_same_refusals(tmp_path, doc, match):
    refused(write(tmp_path, doc, "p.json"), match)


def test_a_json_policy_file_loads_like_its_yaml_twin(tmp_path):
    data = {"name": "j", "categories": [{"code": "A1", "name": "Apples", "should_not": ["a"]}],
            "sensitive": ["A1"]}  # fmt: skip
    from_json = Policy.load(write(tmp_path, json.dumps(data), "p.json"))
    assert from_json.text == Policy.from_data(data).text and from_json.sensitive == ["A1"]
