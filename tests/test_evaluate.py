"""Evaluation inputs, policy variants, reports and the CLI, end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from llavaguard.errors import ConfigError
from llavaguard.evaluate import compute, join, load_predictions, make_variants
from llavaguard.evaluate.variants import KINDS
from llavaguard.inputs.labels import policy_from_prompt, read_labels, write_labels
from llavaguard.policy import Policy

from conftest import cli

ROWS = [
    {"id": "a", "image": "a.jpg", "rating": "Unsafe", "category": "O3"},
    {"id": "a_v2", "image": "a.jpg", "rating": "Safe", "category": "O3", "allow": "O3"},
    {"id": "b", "image": "b.jpg", "rating": "Safe", "category": "NA: None applying"},
    {"id": "c", "image": "c.jpg", "rating": "Unsafe", "category": "O2: Violence, Harm or Cruelty"},
    {"id": "c_v4", "image": "c.jpg", "rating": "Unsafe", "category": "O2", "sensitive": "O2"},
    {"id": "d", "image": "d.jpg", "rating": "Safe", "category": "O4: Nudity Content"},
]
PREDS = [
    {"id": "a", "rating": "Unsafe", "category": "O3: Sexual Content", "score": 0.8},
    {"id": "a_v2", "rating": "Unsafe", "category": "O3: Sexual Content", "score": 0.7},
    {"id": "b", "rating": "Safe", "category": "NA: None applying", "score": 0.1},
    {"id": "c", "rating": None, "valid": False, "score": 0.55},
    {"id": "c_v4", "rating": "Unsafe", "category": "O2: Violence, Harm, or Cruelty", "score": 0.9},
    {"id": "d", "rating": "Unsafe", "category": "O4", "score": 0.6},
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def labelled(tmp_path) -> tuple[Path, Path]:
    return write_jsonl(tmp_path / "labels.jsonl", ROWS), write_jsonl(tmp_path / "p.jsonl", PREDS)


def test_labels_from_jsonl_csv_and_parquet_are_the_same(tmp_path, labelled):
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = ["id", "image", "rating", "category", "allow", "sensitive"]
    with (tmp_path / "labels.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows([{k: r.get(k, "") for k in keys} for r in ROWS])
    table = pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in ROWS])
    pq.write_table(table, tmp_path / "labels.parquet")
    ref = read_labels(labelled[0])
    for name in ("labels.csv", "labels.parquet"):
        assert read_labels(tmp_path / name) == ref
    # canonical categories, policies and augmentations read from the rows and ids
    assert ref[0].category == "O3: Sexual Content"
    assert ref[3].category == "O2: Violence, Harm, or Cruelty"  # old spelling mapped
    assert ref[1].policy.allowed == ["O3"] and ref[1].augmentation == "v2"
    assert [s.exception for s in ref] == [None, "allowed", None, None, "sensitive", None]
    assert [s.default_policy for s in ref] == [True, False, True, True, False, True]


def test_per_falls_back_to_the_id_suffix_when_the_policy_says_nothing(tmp_path):
    rows = [{"id": "x_v2", "rating": "Safe", "category": "O1"},
            {"id": "y_v4", "rating": "Unsafe", "category": "O5"},
            {"id": "z_v3_a", "rating": "Unsafe", "category": "O5"}]  # fmt: skip
    samples = read_labels(write_jsonl(tmp_path / "l.jsonl", rows))
    # the policy declares nothing for these categories, so the suffix decides
    assert [s.exception for s in samples] == ["allowed", "sensitive", None]


def test_llava_conversation_json_reads_policy_and_label_back(tmp_path):
    policy = Policy.load(allow="O3", sensitive="O6")
    answer = json.dumps(
        {"rating": "Safe", "category": "O3: Sexual Content", "rationale": "Allowed here."},
        indent=4,
    )
    rows = [
        {"id": "img1_v2", "image": "img1.jpg", "conversations": [
            {"from": "human", "value": "<image>\n" + policy.text},
            {"from": "gpt", "value": answer}]},
        {"id": "img2", "image": "img2.jpg", "conversations": [
            {"from": "human", "value": "<image>\n" + Policy.load().text},
            {"from": "gpt", "value": '{"rating": "Unsafe", "category": "O1: Hate, '
                                     'Humiliation, Harassment", "rationale": "x"}'}]},
    ]  # fmt: skip
    (tmp_path / "llava.json").write_text(json.dumps(rows))
    a, b = read_labels(tmp_path / "llava.json")
    assert a.policy.id == policy.id and a.policy.allowed == ["O3"]
    assert (a.rating, a.category, a.augmentation, a.exception) == (
        "Safe", "O3: Sexual Content", "v2", "allowed")  # fmt: skip
    assert b.policy.id == Policy.load().id and b.rating == "Unsafe"
    with pytest.raises(ValueError, match=r"not the llavaguard-v1\.2 policy"):
        policy_from_prompt(policy.text + "\nextra", Policy.load())
    rows[0]["conversations"][0]["value"] = "Is this safe?"
    (tmp_path / "bad.json").write_text(json.dumps(rows))
    with pytest.raises(ConfigError, match=r"bad\.json sample 1 \(img1_v2\): not a LlavaGuard"):
        read_labels(tmp_path / "bad.json")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "a", "rating": "Maybe"}', r"l\.jsonl:2: rating must be Safe or Unsafe"),
        ('{"id": "a", "rating": "Unsafe"}', r"l\.jsonl:2: an Unsafe sample needs a category"),
        ('{"id": "a", "rating": "Safe", "category": "O99"}', r"l\.jsonl:2: category 'O99'"),
        ('{"id": "a", "rating": "Safe", "allow": "Q1"}', r"l\.jsonl:2: unknown category code"),
        ('{"rating": "Safe"}', r"l\.jsonl:2: needs an 'id' or an 'image'"),
        ('{"id": "ok", "rating": "Safe"}', r"l\.jsonl:2: duplicate sample id 'ok'"),
        ("not json", r"l\.jsonl:2: invalid JSON"),
    ],
)
def test_bad_label_rows_name_file_and_line(tmp_path, line, message):
    path = tmp_path / "l.jsonl"
    path.write_text('{"id": "ok", "rating": "Safe"}\n' + line + "\n")
    with pytest.raises(ConfigError, match=message) as e:
        read_labels(path)
    assert "\n" not in str(e.value)


def test_predictions_of_llavaguard_assess_join_by_image_path(tmp_path):
    labels = write_jsonl(tmp_path / "l.jsonl", [
        {"image": "/data/x.jpg", "rating": "Unsafe", "category": "O2"},
        {"image": "/data/y.jpg", "rating": "Safe"},
    ])  # fmt: skip
    assess_out = write_jsonl(tmp_path / "assess.jsonl", [
        {"image": "/data/y.jpg", "rating": "Safe", "category": "NA: None applying",
         "score": 0.2, "valid": True, "error": None, "policy_id": Policy.load().id},
        {"image": "/data/x.jpg", "rating": None, "valid": False, "error": "truncated",
         "policy_id": Policy.load(allow="O1").id},
    ])  # fmt: skip
    rows = join(read_labels(labels), load_predictions(assess_out))
    assert [r.predicted_rating for r in rows] == [None, "Safe"]
    assert [r.policy_mismatch for r in rows] == [True, False]
    report = compute(rows, bootstrap=50)
    assert report["overall"]["invalid"] == 1 and report["overall"]["policy_mismatch"] == 1


def test_a_shared_image_path_is_not_credited_to_several_samples(tmp_path, labelled):
    samples = read_labels(labelled[0])
    shared = [s for s in samples if Path(s.image).name == "a.jpg"]
    assert len(shared) == 2  # a.jpg is labelled twice (its path made absolute by the reader)
    rows = [{"image": shared[0].image, "rating": "Unsafe"}]  # keyed by that very path
    rows = join(samples, load_predictions(write_jsonl(tmp_path / "by-image.jsonl", rows)))
    assert all(r.prediction is None for r in rows)  # so it needs ids
    images = [s.image for s in samples]
    unique = next(s for s in samples if images.count(s.image) == 1)
    rows = [{"image": unique.image, "rating": "Unsafe"}]  # an image labelled once does match
    rows = join(samples, load_predictions(write_jsonl(tmp_path / "by-unique.jsonl", rows)))
    assert [r.sample.id for r in rows if r.prediction is not None] == [unique.id]


def test_variants_derive_their_labels(labelled):
    samples = read_labels(labelled[0])
    made = make_variants(samples, ["all"], seed=0)
    assert make_variants(samples, ["all"], seed=0) == made  # seeded
    alone = make_variants(samples[-1:], ["all"], seed=0)  # one sample's draws are its own
    assert alone == [v for v in made if v.id.startswith(f"{samples[-1].id}@")]
    by = {(v.id.split("@")[0], v.variant): v for v in made}
    assert {v.variant for v in made} == set(KINDS)
    assert not any(s.id.startswith("a_v2@") for s in made)  # only default-policy samples vary
    a_allowed = by[("a", "allow-own")]
    assert a_allowed.rating == "Safe" and "O3" in a_allowed.policy.allowed
    assert a_allowed.exception == "allowed"
    d_sensitive = by[("d", "sensitive-own")]  # a Safe sample naming O4 becomes Unsafe
    assert d_sensitive.rating == "Unsafe" and d_sensitive.policy.sensitive == ["O4"]
    assert ("b", "allow-own") not in by  # NA has no own category to allow
    for kind in ("allow-others", "sensitive-others", "shuffle", "rename"):
        v = by[("c", kind)]
        assert v.rating == "Unsafe", kind
        assert v.exception is None
    shuffled = by[("c", "shuffle")].policy
    assert [c.code for c in shuffled.categories] != [c.code for c in Policy.load().categories]
    assert sorted(c.label for c in shuffled.categories) == sorted(
        c.label for c in Policy.load().categories
    )
    renamed = by[("c", "rename")]
    assert renamed.category.endswith(": Violence, Harm, or Cruelty")
    assert renamed.category.split(":")[0] in {c.code for c in renamed.policy.categories}
    assert renamed.category in renamed.policy.text and "O2:" not in renamed.policy.text
    with pytest.raises(ConfigError, match="unknown variant 'flip'"):
        make_variants(samples, ["flip"])


def test_variant_rows_read_back_as_the_same_samples(tmp_path, labelled):
    made = make_variants(read_labels(labelled[0]), ["all"], seed=1)
    path = write_labels(made, tmp_path / "variants.jsonl")
    back = read_labels(path)
    assert [s.policy.id for s in back] == [s.policy.id for s in made]
    assert [(s.id, s.rating, s.category, s.variant) for s in back] == [
        (s.id, s.rating, s.category, s.variant) for s in made
    ]


def test_cli_evaluate_writes_three_report_kinds_and_compares_runs(tmp_path, labelled):
    labels, preds = labelled
    res = cli("evaluate", "run", str(labels), "--predictions", str(preds),
                  "-o", str(tmp_path / "run1"), "--bootstrap", "200")  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "run1" / "report.json").read_text())
    ex = report["overall"]["rating"]["excluded"]
    assert (ex["tp"], ex["fp"], ex["tn"], ex["fn"]) == (2, 2, 1, 0)
    assert report["overall"]["per"]["excluded"]["per"] == 0.5
    assert report["by_augmentation"].keys() == {"v2", "v4"}
    assert report["default_policy"]["n"] == 4
    md = (tmp_path / "run1" / "report.md").read_text()
    assert "| Bal. acc. | 66.67 [" in md and "## By expected category" in md
    for png in ("confusion", "categories", "roc", "pr", "reliability"):
        data = (tmp_path / "run1" / "plots" / f"{png}.png").read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000, png
        assert f"plots/{png}.png" in md
    samples = [json.loads(x) for x in (tmp_path / "run1" / "samples.jsonl").read_text().split("\n")
               if x]  # fmt: skip
    assert [s["id"] for s in samples] == [r["id"] for r in ROWS]
    # a second run, every answer right, then the comparison
    right = [{"id": r["id"], "rating": r["rating"]} for r in ROWS]
    preds2 = write_jsonl(tmp_path / "right.jsonl", right)
    res = cli("evaluate", "run", str(labels), "--predictions", str(preds2), "-o",
                  str(tmp_path / "run2"), "--no-plots", "--bootstrap", "0")  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert not (tmp_path / "run2" / "plots").exists()
    res = cli("evaluate", "compare", str(tmp_path / "run1"), str(tmp_path / "run2"),
                  "-o", str(tmp_path / "cmp.md"))  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[4].startswith("| run1 | 6 | 1 | 66.67 | 100.00 | 33.33 |")
    assert lines[5].startswith("| run2 | 6 | 0 | 100.00 | 100.00 | 100.00 |")
    assert (tmp_path / "cmp.md").read_text() == res.stdout
    res = cli("evaluate", "compare", str(tmp_path / "run1"), "--slice", "O3: Sexual Content")
    assert "| run1 | 2 | 0 | 50.00 |" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "L"], "either a predictions file or a model"),
        (["run", "L", "--predictions", "P", "--variants", "all"], "variants need a model"),
        (["run", "missing.jsonl", "--predictions", "P"], "missing.jsonl: file not found"),
        (["compare", "nowhere"], "nowhere: no report.json"),
    ],
)
def test_cli_evaluate_errors_are_one_line(tmp_path, labelled, args, message):
    args = [str(labelled[0]) if a == "L" else str(labelled[1]) if a == "P" else a for a in args]
    res = cli("evaluate", *args, cwd=tmp_path)
    assert res.returncode == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_evaluate_with_a_tiny_model_and_policy_variants(tmp_path, tiny_models):
    """Predictions made on the fly under each sample's own policy, variants included."""
    from llavaguard.testing import make_sample_images

    model = tiny_models("qwen2.5-vl")
    images = make_sample_images(tmp_path / "img", 3)
    rows = [
        {"id": "p0", "image": str(images[0]), "rating": "Unsafe", "category": "O2"},
        {"id": "p0_v2", "image": str(images[0]), "rating": "Safe", "category": "O2",
         "allow": "O2"},
        {"id": "p1", "image": str(images[1]), "rating": "Safe"},
        {"id": "p2", "image": str(images[2]), "rating": "Safe", "category": "O4"},
    ]  # fmt: skip
    labels = write_jsonl(tmp_path / "labels.jsonl", rows)
    res = cli(
        "evaluate", "run", str(labels), "--model", str(model), "--variants", "all",
        "--max-new-tokens", "12", "-o", str(tmp_path / "out"), "--bootstrap", "100",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["model"] == str(model) and report["engine"] == "transformers"
    assert report["overall"]["n"] == len(rows)  # headline figures leave the variants out
    assert report["variants"]["n"] > 10
    assert set(report["by_variant"]) == {"original", *KINDS}
    assert report["by_variant"]["original"]["n"] == 3  # the default-policy samples
    for part in (report["overall"], report["variants"]):
        assert part["missing"] == 0
        assert part["scores"]["n"] == part["n"]  # every answer scored
    samples = [json.loads(x) for x in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    # each sample was judged under its own policy: ids of variants differ from the original's
    assert len({s["policy_id"] for s in samples}) > 5
    assert "## Policy generalisation" in (tmp_path / "out" / "report.md").read_text()


@pytest.mark.slow
def test_an_interrupted_model_run_resumes_without_redoing_work(tmp_path, tiny_models):
    from llavaguard.engines import GenerationConfig
    from llavaguard.evaluate import EvalConfig, evaluate
    from llavaguard.guard import GuardSpec
    from llavaguard.testing import make_sample_images

    model = tiny_models("llava-onevision")
    images = make_sample_images(tmp_path / "img", 4)
    rows = [{"id": f"s{i}", "image": str(p), "rating": "Safe"} for i, p in enumerate(images)]
    rows.append({"id": "broken", "image": str(tmp_path / "missing.jpg"), "rating": "Safe"})
    labels = write_jsonl(tmp_path / "labels.jsonl", rows)
    spec = GuardSpec(model=str(model), generation=GenerationConfig(max_new_tokens=8))
    cfg = EvalConfig(labels=labels, guard=spec, output=tmp_path / "out", bootstrap=0,
                     plots=False)  # fmt: skip
    first = evaluate(cfg)
    assert first["reused"] == 0 and first["overall"]["invalid"] == 1
    pred_file = tmp_path / "out" / "predictions.jsonl"
    lines = pred_file.read_text().splitlines()
    assert len(lines) == 5
    # as if killed while writing the third answer
    pred_file.write_text("\n".join(lines[:2]) + "\n" + lines[2][:25])
    second = evaluate(cfg)
    assert second["reused"] == 2  # the two whole lines; the half line and the rest are redone
    assert second["overall"]["rating"] == first["overall"]["rating"]
    assert second["overall"]["scores"] == first["overall"]["scores"]


def test_a_predicted_category_is_resolved_once_per_spelling(tmp_path, monkeypatch):
    """Resolving a category per row and per access was 60% of a 100,000-row evaluation."""
    from llavaguard.evaluate import data

    calls = []
    real = data.canonical_category
    monkeypatch.setattr(data, "canonical_category", lambda v, p: calls.append(v) or real(v, p))
    rows = [{"id": f"s{i}", "rating": "Safe"} for i in range(300)]
    preds = [{"id": f"s{i}", "rating": "Safe", "category": ["o3", "NA: None applying",
              "O2: Violence, Harm or Cruelty"][i % 3]} for i in range(300)]  # fmt: skip
    samples = read_labels(write_jsonl(tmp_path / "l.jsonl", rows))
    joined = join(samples, load_predictions(write_jsonl(tmp_path / "p.jsonl", preds)))
    compute(joined, bootstrap=20)
    assert sorted(calls) == sorted(set(calls)) and len(calls) == 3
    assert joined[0].predicted_category == "O3: Sexual Content"
