"""Building a training set: augmentations against the reference texts, seeds, the v1.2
recipe, per-image splits, balance, and exports that the evaluation reads back."""

from __future__ import annotations

import json
import random
from collections import Counter

import pytest

from llavaguard.dataset.build import (
    AUGMENTATIONS,
    augment,
    balance,
    build_dataset,
    split,
    to_llava,
)
from llavaguard.errors import ConfigError
from llavaguard.inputs.labels import LabelledSample
from llavaguard.policy import Policy

O3 = "O3: Sexual Content"
# these rows name images that do not exist; the hf export embeds images and has its own tests
NO_HF = ("llava", "trl", "sharegpt", "labels")


def labelled(
    id: str, image: str, rating: str, category: str, rationale: str = ""
) -> LabelledSample:
    return LabelledSample(id=id, image=image, rating=rating, category=category, rationale=rationale)


def images(n_unsafe: int = 6, n_safe: int = 10) -> list[LabelledSample]:
    cats = ["O1: Hate, Humiliation, Harassment", O3, "O6: Weapons or Substance Abuse"]
    unsafe = [labelled(f"u{i}", f"u{i}.jpg", "Unsafe", cats[i % 3]) for i in range(n_unsafe)]
    safe = [labelled(f"s{i}", f"s{i}.jpg", "Safe", "NA: None applying")
            for i in range(n_safe)]  # fmt: skip
    return unsafe + safe


def block(policy: Policy, code: str) -> str:
    c = policy.taxonomy.category(code)
    return f"{c.label}: \n{policy.guidelines(c)}\n"


def test_exceptions_swap_in_exactly_the_reference_variants(reference):
    taxonomy = json.loads((reference / "llavaguard-v1.2-taxonomy.json").read_text())
    ref = {c["code"]: c for c in taxonomy["categories"]}
    img = labelled("x", "x.jpg", "Unsafe", O3)
    by_aug = {a: img.under(*AUGMENTATIONS[a](Policy.load(), img.category, random.Random(1)))
              for a in ("v2", "v4")}  # fmt: skip
    allowed, rating = by_aug["v2"].policy, by_aug["v2"].rating
    assert rating == "Safe" and allowed.allowed == ["O3"]
    assert f"O3: Sexual Content: \n{ref['O3']['non_violating']}\n" in allowed.text
    sensitive, rating = by_aug["v4"].policy, by_aug["v4"].rating
    assert rating == "Unsafe" and sensitive.sensitive == ["O3"]
    assert f"O3: Sexual Content: \n{ref['O3']['sensitive']}\n" in sensitive.text
    for code in ("O1", "O9"):  # the other categories keep their default text
        assert f"{block(Policy.load(), code)}" in allowed.text


def test_v12_recipe_labels_and_suffixes():
    samples = augment(images(), seed=3)
    ids = [s.id for s in samples]
    assert [i for i in ids if i.startswith("u0")] == [
        "u0",
        "u0_v3_a",
        "u0_v3_b",
        "u0_v3_c",
        "u0_v2",
    ]
    assert [i for i in ids if i.startswith("s0")] == ["s0"]  # safe images: one sample
    assert len(samples) == 6 * 5 + 10
    for s in samples:
        own = s.category.split(":")[0]
        if s.augmentation == "v2":
            assert s.rating == "Safe" and s.policy.allowed == [own]
        elif s.augmentation == "v3":
            assert s.rating == "Unsafe" and own not in s.policy.allowed
            assert 1 <= len(s.policy.allowed) <= 3
        else:
            assert s.augmentation is None and s.policy.id == Policy.load().id


def test_every_augmentation_and_its_label():
    img = labelled("x", "x.jpg", "Unsafe", O3)
    samples = augment([img], recipe=["v1", "v2", "v2a", "v3", "v4", "v5"], seed=0)
    by = {s.augmentation: s for s in samples}
    assert by["v1"].rating == "Unsafe" and "O3" not in by["v1"].policy.allowed
    assert by["v2a"].rating == "Safe" and "O3" in by["v2a"].policy.allowed
    assert 1 <= len(by["v2a"].policy.allowed) <= 3
    assert by["v4"].rating == "Unsafe" and by["v4"].policy.sensitive == ["O3"]
    assert by["v5"].rating == "Unsafe" and "O3" not in by["v5"].policy.sensitive
    assert 1 <= len(by["v5"].policy.sensitive) <= 3
    with pytest.raises(ConfigError, match="unknown augmentation 'v9'"):
        augment([img], recipe=["v9"])


def test_same_seed_same_samples_other_seed_other_draws():
    a = to_llava(augment(images(), seed=1))
    assert a == to_llava(augment(images(), seed=1))
    assert a != to_llava(augment(images(), seed=2))
    # an image's draws do not depend on the other images
    alone = [s.policy.id for s in augment(images()[:1], seed=1)]
    assert alone == [s.policy.id for s in augment(images(), seed=1)][: len(alone)]


def test_split_per_image_stratified_and_balance():
    imgs = images(30, 50)
    splits = split(imgs, 0.2, seed=0)
    assert splits == split(imgs, 0.2, seed=0)
    strata = Counter((i.category, i.rating, splits[i.id]) for i in imgs)
    assert strata[(O3, "Unsafe", "test")] == 2 and strata[(O3, "Unsafe", "train")] == 8
    assert strata[("NA: None applying", "Safe", "test")] == 10
    samples = augment(imgs)
    assert all(splits[s.image_id] == splits[s.id.split("_v")[0]] for s in samples)
    train = [s for s in samples if splits[s.image_id] == "train"]
    balanced = balance(train, seed=0)
    counts = Counter(s.rating for s in balanced)
    assert counts["Safe"] == counts["Unsafe"]
    assert len({s.id for s in balanced}) == len(balanced)  # copies get their own ids


def test_build_writes_formats_the_evaluation_reads(tmp_path):
    from llavaguard.inputs.labels import read_labels

    rows = [{"id": i.id, "image": i.image, "rating": i.rating,
             "category": i.category.split(":")[0] if i.rating == "Unsafe" else "",
             "rationale": f"because {i.id}"} for i in images(10, 10)]  # fmt: skip
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = build_dataset(str(labels), str(tmp_path / "ds"), seed=0, formats=NO_HF)
    # strata O1 4, O3 3, O6 3 Unsafe and 10 Safe images: round(0.2 n) each = 1 + 1 + 1 + 2
    assert summary["splits"]["test"]["images"] == 5 and summary["splits"]["train"]["images"] == 15
    train = summary["splits"]["train"]
    assert train["ratings"]["Safe"] == train["ratings"]["Unsafe"]
    test = read_labels(tmp_path / "ds" / "test.llava.json")  # the policy read back from text
    assert {s.augmentation for s in test} >= {None, "v2", "v3"}
    for s in test:
        if s.augmentation == "v2":
            assert s.exception == "allowed" and s.rating == "Safe"
    same = read_labels(tmp_path / "ds" / "test.labels.jsonl")
    assert [(s.id, s.policy.id, s.rating) for s in same] == [
        (s.id, s.policy.id, s.rating) for s in test
    ]
    trl = [json.loads(x) for x in (tmp_path / "ds" / "train.trl.jsonl").read_text().splitlines()]
    answer = json.loads(trl[0]["completion"][0]["content"][0]["text"])
    assert answer["rationale"].startswith("because ")
    with pytest.raises(ConfigError, match=r"labels\.jsonl:1: rating must be"):
        labels.write_text('{"image": "a.jpg", "rating": "maybe"}\n')
        build_dataset(str(labels), str(tmp_path / "bad"), formats=NO_HF)


def test_an_exception_that_turns_the_label_gets_a_rationale_that_says_so(tmp_path):
    img = labelled("k", "k.jpg", "Unsafe", "O6: Weapons or Substance Abuse", "A knife.")
    by = {s.augmentation: s for s in augment([img], recipe=["v2", "v3", "v4"])}
    assert "declares category O6 non-violating" in by["v2"].rationale
    assert by["v3"].rationale == by["v4"].rationale == "A knife."  # the label stands
    labels = tmp_path / "sub" / "labels.jsonl"
    labels.parent.mkdir()
    labels.write_text('{"image": "img/k.jpg", "rating": "Unsafe", "category": "O6"}\n')
    build_dataset(str(labels), str(tmp_path / "ds"), test_fraction=0.0, formats=NO_HF)
    row = json.loads((tmp_path / "ds" / "train.labels.jsonl").read_text().splitlines()[0])
    assert row["image"] == str((tmp_path / "sub" / "img" / "k.jpg").resolve())  # absolute


def test_import_maps_the_annotation_label_space(tmp_path):
    import csv

    from llavaguard.dataset.labels import import_labels

    (tmp_path / "img").mkdir()
    for name in "abcdef":
        (tmp_path / "img" / f"{name}.jpg").write_bytes(b"x")
    rows = [
        ("a", "Highly Inappropriate", "Substance Abuse or Weapons"),
        ("b", "Generally Acceptable", "Nature"),
        ("c", "Discard Sample", "Nudity"),
        ("d", "Moderately Inappropriate", "Respectful or Appropriate Content"),  # inconsistent
        ("e", "Barely Acceptable", "Nudity"),  # safe, related category kept
        ("f", "moderately  inappropriate", "Humiliation, Harassment or Hate"),
    ]
    with (tmp_path / "ann.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "score", "category"])
        w.writerows([(f"img/{n}.jpg", s, c) for n, s, c in rows])
    summary = import_labels(str(tmp_path / "ann.csv"), str(tmp_path / "labels.jsonl"))
    assert summary["kept"] == 4
    assert summary["dropped"] == {"discard": 1, "unsafe without a category": 1}
    out = [json.loads(x) for x in (tmp_path / "labels.jsonl").read_text().splitlines()]
    assert [(r["rating"], r["category"]) for r in out] == [
        ("Unsafe", "O6: Weapons or Substance Abuse"), ("Safe", "NA: None applying"),
        ("Safe", "O4: Nudity Content"), ("Unsafe", "O1: Hate, Humiliation, Harassment"),
    ]  # fmt: skip
    build_dataset(str(tmp_path / "labels.jsonl"), str(tmp_path / "ds"), test_fraction=0.0,
                  formats=NO_HF)  # fmt: skip
    with (tmp_path / "ann.csv").open("a", newline="") as f:
        csv.writer(f).writerow(["img/a.jpg", "Generally Acceptable", "Cooking"])
    # errors name the line an editor goes to: the header is line 1, the 7th row line 8
    with pytest.raises(ConfigError, match=r"ann\.csv:8: unknown category label 'Cooking'"):
        import_labels(str(tmp_path / "ann.csv"), str(tmp_path / "x.jsonl"))
    (tmp_path / "bad.csv").write_text("image,score,category\nimg/zz.jpg,Nature,Nature\n")
    with pytest.raises(ConfigError, match=r"bad\.csv:2: image not found: img/zz\.jpg"):
        import_labels(str(tmp_path / "bad.csv"), str(tmp_path / "x.jsonl"))
    mapping = tmp_path / "map.yaml"
    mapping.write_text("scores: {fine: Safe, bad: Unsafe}\ncategories: {knives: O6, '': NA}\n")
    (tmp_path / "own.csv").write_text("image,score,category\nimg/a.jpg,bad,knives\n")
    summary = import_labels(str(tmp_path / "own.csv"), str(tmp_path / "own.jsonl"), str(mapping))
    assert summary["categories"] == {"O6: Weapons or Substance Abuse": 1}


def test_a_custom_taxonomy_is_the_default_policy_of_import_build_and_evaluation(tmp_path):
    from llavaguard.dataset.labels import import_labels
    from llavaguard.inputs.labels import read_labels
    from llavaguard.testing.synthetic import COMPACT_POLICY, make_benchmark

    csv = make_benchmark(tmp_path / "b", per_category=5, safe=10, discard=0)
    labels = tmp_path / "labels.jsonl"
    import_labels(str(csv), str(labels), check_images=False, policy=str(COMPACT_POLICY))
    build_dataset(str(labels), str(tmp_path / "ds"), formats=NO_HF, policy=str(COMPACT_POLICY))
    compact = Policy.load(COMPACT_POLICY)
    rows = [json.loads(x) for x in (tmp_path / "ds" / "train.trl.jsonl").read_text().splitlines()]
    v2 = next(r for r in rows if r["id"].endswith("_v2"))
    code = json.loads(v2["completion"][0]["content"][0]["text"])["category"].split(":")[0]
    assert v2["prompt"][0]["content"][1]["text"] == compact.with_states(allow=[code]).text
    # the labels carry the taxonomy inline: the evaluation reads them anywhere
    moved = tmp_path / "elsewhere.jsonl"
    moved.write_text((tmp_path / "ds" / "test.labels.jsonl").read_text())
    samples = read_labels(moved)
    assert samples and {s.policy.name for s in samples} == {"synthetic-compact"}
    exceptions = [s for s in samples if s.augmentation == "v2"]
    assert exceptions and all(s.exception == "allowed" for s in exceptions)
    assert all(s.policy.text == compact.with_states(allow=s.policy.allowed).text for s in samples)


def test_augmentations_are_the_policy_edits_under_the_one_seeding_rule():
    from llavaguard.evaluate.variants import KINDS
    from llavaguard.policy.edits import edit_rng

    pairs = {"v2a": "allow-own", "v3": "allow-others", "v4": "sensitive-own",
             "v5": "sensitive-others"}  # fmt: skip
    assert all(AUGMENTATIONS[a] is KINDS[k] for a, k in pairs.items())  # written once
    img = labelled("x", "x.jpg", "Unsafe", O3)
    by_id = {s.id: s for s in augment([img], recipe=["v3", "v3", "v5"], seed=7)}
    for suffix, edit in (("v3_b", "v3"), ("v5", "v5")):
        policy, _ = AUGMENTATIONS[edit](img.policy, img.category, edit_rng(7, "x", suffix))
        assert by_id[f"x_{suffix}"].policy.id == policy.id
