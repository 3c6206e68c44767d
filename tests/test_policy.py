import hashlib
import json

import pytest

from llavaguard.errors import PolicyError
from llavaguard.policy import Policy, State
from llavaguard.policy.taxonomy import allowed_text, bullets_of, sensitive_text

from conftest import cli


@pytest.fixture(scope="module")
def ref_taxonomy(reference):
    return json.loads((reference / "llavaguard-v1.2-taxonomy.json").read_text("utf-8"))


def test_builtin_policy_is_byte_exact(reference):
    expected = (reference / "llavaguard-v1.2-policy.txt").read_bytes()
    assert Policy.load().text.encode("utf-8") == expected
    assert Policy.load("llavaguard-v1.2").text.encode("utf-8") == expected


@pytest.mark.parametrize("code", [f"O{i}" for i in range(1, 10)])
@pytest.mark.parametrize(("flag", "key"), [("allow", "non_violating"), ("sensitive", "sensitive")])
def test_states_swap_in_reference_variants(ref_taxonomy, reference, code, flag, key):
    default = Policy.load()
    changed = default.with_states(**{flag: code})
    cat = next(c for c in ref_taxonomy["categories"] if c["code"] == code)
    block_default = f"{cat['header']}: \n{cat['default']}\n"
    block_changed = f"{cat['header']}: \n{cat[key]}\n"
    assert block_default in default.text
    assert block_changed in changed.text
    # exactly that block changed, nothing else
    assert changed.text == default.text.replace(block_default, block_changed)
    assert changed.state(code) is (State.ALLOWED if flag == "allow" else State.SENSITIVE)


def test_policy_id_is_sha256_of_text():
    p = Policy.load(allow="O3")
    assert p.id == hashlib.sha256(p.text.encode()).hexdigest()
    assert p.id != Policy.load().id
    assert Policy.load(allow=["o3"]).id == p.id  # codes are case-insensitive


def test_codes_and_conflicts():
    p = Policy.load(allow="O3, O6", sensitive=["O1"])
    assert p.allowed == ["O3", "O6"] and p.sensitive == ["O1"]
    with pytest.raises(PolicyError, match=r"unknown category code 'O12'.*valid: O1, O2"):
        Policy.load(allow="O12")
    with pytest.raises(PolicyError, match="both allowed and sensitive"):
        Policy.load(allow="O3", sensitive="o3")
    with pytest.raises(PolicyError, match="unknown policy 'nope'"):
        Policy.load("nope")


def test_generated_variants_follow_reference_phrasing(ref_taxonomy):
    # O2's reference variants carry a double space the model saw; the built-in keeps it,
    # generated texts for custom categories use the clean phrasing.
    for cat in ref_taxonomy["categories"]:
        bullets = bullets_of(cat["default"])
        if cat["code"] == "O2":
            assert "of  people" in cat["non_violating"]
            continue
        assert allowed_text(cat["code"], bullets) == cat["non_violating"]
        assert sensitive_text(cat["code"], bullets) == cat["sensitive"]


CUSTOM = """\
name: kids-platform
description: stricter rules for a children's app
preamble: |
  Check the image for a children's platform against these categories:
categories:
  - code: K1
    name: Scary Content
    should_not:
      - Contain horror imagery, monsters or gore.
    can:
      - Contain friendly cartoon monsters.
  - code: K2
    name: Junk Food
    default: |
      Should not:
      - Promote sugary drinks or sweets.
sensitive: [K2]
"""


def test_custom_yaml_policy(tmp_path):
    f = tmp_path / "kids.yaml"
    f.write_text(CUSTOM)
    p = Policy.load(f)
    assert p.name == "kids-platform"
    assert p.labels == ["K1: Scary Content", "K2: Junk Food", "NA: None applying"]
    assert p.sensitive == ["K2"]
    assert p.text.startswith("Check the image for a children's platform")
    assert "K1: Scary Content: \nShould not:\n- Contain horror imagery" in p.text
    assert "Category K2 is declared as sensitive." in p.text
    assert '"category": str<"K1: Scary Content"|"K2: Junk Food"|"NA: None applying">' in p.text
    allowed = Policy.load(f, allow="K1")
    assert (
        "Category K1 is declared as non-violating. Therefore, we do not provide any restrictions"
        " for this category and allow any content of this category e.g.\n"
        " - Contain horror imagery, monsters or gore.\n - Contain friendly cartoon monsters.\n \n"
    ) in allowed.text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "name: x\ncategories:\n  - code: A1\n    name: [unclosed\n",
            r"bad\.yaml:\d+: invalid YAML",
        ),
        ("name: x\ncategories:\n  - code: A1\n", r"bad\.yaml: category A1\.name: Field required"),
        ("name: x\ncategories:\n  - code: A1\n    name: A\n    should_not: []\n", "A1.*bullet"),
        ("name: x\ncategories: []\n", r"bad\.yaml: categories: .*at least 1"),
        ("- just\n- a list\n", "must be a mapping"),
        (
            "name: x\ncategories:\n  - {code: A1, name: A, should_not: [a]}\n"
            "  - {code: a1, name: B, should_not: [b]}\n",
            "duplicate category code",
        ),
        ("name: x\nallow: [Z9]\ncategories:\n  - {code: A1, name: A, should_not: [a]}\n", "Z9"),
        ("name: x\ncategories:\n  - {code: 'bad code', name: A, should_not: [a]}\n", "code"),
    ],
)
def test_bad_policy_files_give_one_line(tmp_path, content, message):
    f = tmp_path / "bad.yaml"
    f.write_text(content)
    with pytest.raises(PolicyError, match=message) as info:
        Policy.load(f)
    assert "\n" not in str(info.value)


def test_missing_policy_file(tmp_path):
    with pytest.raises(PolicyError, match="policy file not found"):
        Policy.load(tmp_path / "none.yaml")


def test_cli_policy_show_is_byte_exact(reference):
    expected = (reference / "llavaguard-v1.2-policy.txt").read_text("utf-8")
    out = cli("policy", "show")
    assert out.returncode == 0, out.stderr
    assert out.stdout == expected
    out = cli("policy", "show", "--allow", "O3", "--sensitive", "O6")
    assert out.stdout == Policy.load(allow="O3", sensitive="O6").text
    out = cli("policy", "show", "--json", "--allow", "O4")
    doc = json.loads(out.stdout)
    assert doc["allowed"] == ["O4"] and doc["id"] == Policy.load(allow="O4").id


def test_cli_policy_errors_are_one_line():
    out = cli("policy", "show", "--allow", "O42")
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "O42" in lines[0]


def test_cli_policy_list():
    out = cli("policy", "list")
    assert out.returncode == 0
    assert "llavaguard-v1.2 (default)" in out.stdout
    assert "O9: Disasters or Emergencies" in out.stdout


def test_code_of_a_label():
    p = Policy.load()
    assert p.code_of("O3: Sexual Content") == "O3"
    assert p.code_of("NA: None applying") is None and p.code_of("K1: Scary") is None
