"""The readers of labelled sets and predictions: byte-order marks, duplicates, scores that are
no probability, empty files, ids that are falsy, one rating vocabulary, inline policies, and
what hostile files make of them (only the project's one-line errors, never a traceback)."""

from __future__ import annotations

import csv
import json
import string
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llavaguard.errors import LlavaGuardError
from llavaguard.evaluate import join, load_predictions
from llavaguard.inputs.labels import (
    LabelledSample,
    augmentation_of,
    label_row,
    parse_rating,
    read_labels,
    write_labels,
)
from llavaguard.inputs.tables import iter_rows
from llavaguard.policy import Policy

from conftest import cli

BOM = "\ufeff"
LABELS = [
    {"id": "a", "image": "a.png", "rating": "Safe", "category": ""},
    {"id": "b", "image": "b.png", "rating": "Unsafe", "category": "O1"},
    {"id": "c", "image": "c.png", "rating": "Safe", "category": ""},
    {"id": "d", "image": "d.png", "rating": "Unsafe", "category": "O2"},
]
PREDS = [
    {"id": "a", "rating": "Safe", "score": 0.1},
    {"id": "b", "rating": "Unsafe", "score": 0.9},
    {"id": "c", "rating": "Unsafe", "score": 0.6},
    {"id": "d", "rating": "Safe", "score": 0.4},
]
CUSTOM = {  # a policy in the policy file's own format
    "name": "kitchen",
    "categories": [
        {"code": "K1", "name": "Knives", "should_not": ["Show knives."]},
        {"code": "K2", "name": "Fire", "should_not": ["Show open fire."]},
    ],
}


def write_csv(path: Path, rows: list[dict], bom: bool = False) -> Path:
    with path.open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list, prefix: str = "") -> Path:
    path.write_text(prefix + "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def evaluate(tmp_path: Path, labels: Path, preds: Path, *more: str):
    out = tmp_path / "report"
    return cli("evaluate", "run", str(labels), "--predictions", str(preds), "-o", str(out),
               "--no-plots", "--bootstrap", "0", *more)  # fmt: skip


def report(tmp_path: Path) -> dict:
    return json.loads((tmp_path / "report" / "report.json").read_text())


def one_line_error(proc, *parts: str) -> None:
    """Refused: exit 2, one line on stderr naming each part, no traceback."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for part in parts:
        assert part in lines[0], (part, lines[0])
    assert "Traceback" not in proc.stderr and "validation error for" not in proc.stderr


# ---- item 20: a byte-order mark is no part of the first column's name -----------------------


def test_a_bom_csv_of_labels_keeps_its_ids(tmp_path):
    plain = read_labels(write_csv(tmp_path / "plain.csv", LABELS))
    marked = read_labels(write_csv(tmp_path / "bom.csv", LABELS, bom=True))
    assert [s.id for s in marked] == ["a", "b", "c", "d"]  # not the image paths
    assert [(s.id, s.rating, s.category) for s in marked] == [
        (s.id, s.rating, s.category) for s in plain
    ]


def test_a_bom_csv_of_predictions_is_scored(tmp_path):
    labels = write_csv(tmp_path / "labels.csv", LABELS, bom=True)
    proc = evaluate(tmp_path, labels, write_csv(tmp_path / "preds.csv", PREDS, bom=True))
    assert proc.returncode == 0, proc.stderr
    overall = report(tmp_path)["overall"]
    assert overall["n"] == 4 and overall["missing"] == 0 and overall["invalid"] == 0
    assert overall["rating"]["excluded"]["balanced_accuracy"] == 0.5
    assert overall["scores"]["roc_auc"] == 0.75


def test_a_bom_jsonl_json_and_annotation_csv_read(tmp_path):
    rows = [json.dumps(r) for r in LABELS]
    (tmp_path / "l.jsonl").write_text(BOM + "\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "l.json").write_text(BOM + json.dumps(LABELS), encoding="utf-8")
    assert [s.id for s in read_labels(tmp_path / "l.jsonl")] == ["a", "b", "c", "d"]
    assert [s.id for s in read_labels(tmp_path / "l.json")] == ["a", "b", "c", "d"]
    for name in ("a", "b"):
        (tmp_path / f"{name}.png").write_bytes(b"x")
    ann = [{"image": "a.png", "score": "Generally Acceptable", "category": "Nature"},
           {"image": "b.png", "score": "Highly Inappropriate", "category": "Nudity"}]  # fmt: skip
    annotations = write_csv(tmp_path / "ann.csv", ann, bom=True)
    proc = cli("dataset", "import", str(annotations), "-o", str(tmp_path / "imported.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ratings"] == {"Safe": 1, "Unsafe": 1}


def test_a_bom_path_list_names_its_first_image(tmp_path):
    from llavaguard.inputs.sources import path_list

    (tmp_path / "list.txt").write_text(BOM + "a.png\nb.png\n", encoding="utf-8")
    items = list(path_list([str(tmp_path / "list.txt")], {}))
    assert [i.id for i in items] == ["a.png", "b.png"]


def test_a_csv_row_with_more_cells_than_its_header_names_its_line(tmp_path):
    (tmp_path / "l.csv").write_text("id,rating\na,Safe\nb,Safe,extra\n")
    with pytest.raises(LlavaGuardError, match=r"l\.csv:3: 1 more cell\(s\) than the header"):
        read_labels(tmp_path / "l.csv")


# ---- item 21: duplicates, scores, empty files, id 0 ------------------------------------------


def test_a_duplicate_prediction_with_other_content_is_refused(tmp_path):
    labels = write_jsonl(tmp_path / "l.jsonl", LABELS)
    preds = write_jsonl(tmp_path / "p.jsonl", [*PREDS, {"id": "a", "rating": "Unsafe"}])
    proc = evaluate(tmp_path, labels, preds)
    one_line_error(proc, "p.jsonl:5", "'a'", "given twice", "first at", "p.jsonl:1")


def test_an_exact_repeat_of_a_prediction_is_dropped_and_said(tmp_path):
    labels = write_jsonl(tmp_path / "l.jsonl", LABELS)
    preds = write_jsonl(tmp_path / "p.jsonl", [*PREDS, PREDS[0]])
    proc = evaluate(tmp_path, labels, preds, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "warning:" in proc.stderr and "p.jsonl:5" in proc.stderr
    got = report(tmp_path)
    assert got["overall"]["rating"]["excluded"]["balanced_accuracy"] == 0.5
    assert any("exact repeat" in w for w in got["warnings"])


@pytest.mark.parametrize("score", ["nan", "NaN", "inf", "-inf", "-0.1", "1.5", "lots"])
def test_a_score_that_is_no_probability_is_refused(tmp_path, score):
    labels = write_csv(tmp_path / "l.csv", LABELS)
    rows = [dict(p) for p in PREDS]
    rows[2]["score"] = score
    proc = evaluate(tmp_path, labels, write_csv(tmp_path / "p.csv", rows))
    one_line_error(proc, "p.csv:4", "score must be a number in [0, 1]")


def test_a_nan_score_in_jsonl_is_refused_too(tmp_path):
    labels = write_jsonl(tmp_path / "l.jsonl", LABELS)
    preds = tmp_path / "p.jsonl"
    preds.write_text('{"id": "a", "rating": "Safe", "score": NaN}\n')  # Python's json reads it
    one_line_error(evaluate(tmp_path, labels, preds), "p.jsonl:1", "score")


@pytest.mark.parametrize("text", ["", "\n\n", "id,rating,score\n"])
def test_empty_or_header_only_predictions_are_refused(tmp_path, text):
    labels = write_jsonl(tmp_path / "l.jsonl", LABELS)
    (tmp_path / "p.csv").write_text(text)
    one_line_error(evaluate(tmp_path, labels, tmp_path / "p.csv"), "p.csv", "no predictions")


@pytest.mark.parametrize("text", ["", "id,image,rating,category\n"])
def test_empty_or_header_only_labels_are_refused(tmp_path, text):
    (tmp_path / "l.csv").write_text(text)
    preds = write_jsonl(tmp_path / "p.jsonl", PREDS)
    one_line_error(evaluate(tmp_path, tmp_path / "l.csv", preds), "l.csv", "no labelled samples")


def test_predictions_that_match_no_sample_are_refused(tmp_path):
    labels = write_jsonl(tmp_path / "l.jsonl", LABELS)
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "zz", "rating": "Safe"}])
    one_line_error(evaluate(tmp_path, labels, preds), "p.jsonl", "none of its 1 predictions")


def test_an_id_of_0_is_an_id(tmp_path):
    labels = write_jsonl(tmp_path / "l.jsonl", [
        {"id": 0, "image": "zero.png", "rating": "Unsafe", "category": "O1"},
        {"id": 1, "image": "one.png", "rating": "Safe"},
    ])  # fmt: skip
    assert [s.id for s in read_labels(labels)] == ["0", "1"]  # not the image path
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": 0, "rating": "Unsafe"},
                                               {"id": 1, "rating": "Safe"}])  # fmt: skip
    rows = join(read_labels(labels), load_predictions(preds))
    assert [r.predicted_rating for r in rows] == ["Unsafe", "Safe"]
    bare = write_jsonl(tmp_path / "bare.jsonl", [{"id": 0, "rating": "Safe"}])
    assert read_labels(bare)[0].id == "0"  # was "needs an 'id' or an 'image'"


def test_an_unknown_prediction_rating_is_refused_not_read_as_no_answer(tmp_path):
    labels = write_jsonl(tmp_path / "l.jsonl", LABELS)
    rows = [dict(p) for p in PREDS]
    rows[1]["rating"] = "Not safe"
    proc = evaluate(tmp_path, labels, write_jsonl(tmp_path / "p.jsonl", rows))
    one_line_error(proc, "p.jsonl:2", "rating must be Safe or Unsafe", "'Not safe'")


# ---- item 22: one rating vocabulary, inline policies in the policy file's format --------------

ACCEPTED = [("safe", "Safe"), ("SAFE", "Safe"), (" Unsafe ", "Unsafe"), ("0", "Safe"),
            ("1", "Unsafe"), (0, "Safe"), (1, "Unsafe"), (1.0, "Unsafe"), (True, "Unsafe"),
            (False, "Safe"), ("true", "Unsafe"), ("FALSE", "Safe")]  # fmt: skip
REFUSED = ["Not safe", "2", "yes", "unsafe!", 0.5, [1]]


@pytest.mark.parametrize(("value", "rating"), ACCEPTED)
def test_every_reader_accepts_the_same_ratings(tmp_path, value, rating):
    """dataset import, dataset build (read_labels) and evaluate's predictions alike."""
    from llavaguard.dataset.labels import import_labels

    (tmp_path / "x.png").write_bytes(b"x")
    row = {"id": "x", "image": "x.png", "rating": value, "category": "O1"}
    assert read_labels(write_jsonl(tmp_path / "l.jsonl", [row]))[0].rating == rating
    import_labels(str(write_jsonl(tmp_path / "ann.jsonl", [row])), str(tmp_path / "i.jsonl"))
    assert json.loads((tmp_path / "i.jsonl").read_text())["rating"] == rating
    assert load_predictions(write_jsonl(tmp_path / "p.jsonl", [row]))[0].rating == rating


@pytest.mark.parametrize("value", REFUSED)
def test_every_reader_refuses_the_same_ratings_with_one_message(tmp_path, value):
    from llavaguard.dataset.labels import import_labels

    (tmp_path / "x.png").write_bytes(b"x")
    row = {"id": "x", "image": "x.png", "rating": value, "category": "O1"}
    path = write_jsonl(tmp_path / "t.jsonl", [row])
    calls = [lambda: read_labels(path), lambda: load_predictions(path),
             lambda: import_labels(str(path), str(tmp_path / "i.jsonl"))]  # fmt: skip
    for call in calls:
        with pytest.raises(LlavaGuardError, match=r"t\.jsonl:1: .*Safe or Unsafe") as e:
            call()
        assert "\n" not in str(e.value)


def test_dataset_build_and_import_take_a_rating_of_1_that_evaluate_takes(tmp_path):
    for name in "ab":
        (tmp_path / f"{name}.png").write_bytes(b"x")
    rows = [{"image": "a.png", "rating": "0", "category": ""},
            {"image": "b.png", "rating": "1", "category": "Nudity"}]  # fmt: skip
    ann = write_csv(tmp_path / "ann.csv", rows)
    proc = cli("dataset", "import", str(ann), "-o", str(tmp_path / "l.jsonl"), "--no-check-images")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ratings"] == {"Safe": 1, "Unsafe": 1}
    assert parse_rating("1") == "Unsafe"


def test_an_inline_policy_uses_the_policy_file_format(tmp_path):
    row = {"id": "k", "rating": "Unsafe", "category": "K1", "policy": CUSTOM, "allow": "K2"}
    (sample,) = read_labels(write_jsonl(tmp_path / "l.jsonl", [row]))
    assert sample.policy.name == "kitchen" and sample.policy.allowed == ["K2"]
    assert sample.category == "K1: Knives"
    bad = {**row, "policy": {**CUSTOM, "categories": [{"code": "K 1", "name": "x"}]}}
    path = write_jsonl(tmp_path / "bad.jsonl", [row | {"id": "j"}, bad])
    with pytest.raises(LlavaGuardError) as e:
        read_labels(path)
    message = str(e.value)
    assert "bad.jsonl:2: inline policy: " in message and "\n" not in message
    assert "validation error for" not in message


def test_labels_write_a_custom_policy_in_the_public_format_and_read_old_rows(tmp_path):
    policy = Policy.from_data(CUSTOM, allow=["K2"])
    sample = LabelledSample(id="k", rating="Unsafe", category="K1: Knives", policy=policy)
    path = write_labels([sample], tmp_path / "l.jsonl")
    row = json.loads(path.read_text())
    assert row["policy"]["name"] == "kitchen" and "categories" in row["policy"]
    assert "taxonomy" not in row["policy"]  # not the internal shape
    (back,) = read_labels(path)
    assert back.policy.id == policy.id and label_row(back) == label_row(sample)
    old = dict(row, policy={"taxonomy": policy.taxonomy.model_dump(mode="json"),
                            "states": {"K2": "allowed"}}, allow=[])  # fmt: skip
    (legacy,) = read_labels(write_jsonl(tmp_path / "old.jsonl", [old]))
    assert legacy.policy.id == policy.id


# ---- properties: hostile files give one-line errors; what is written reads back ----------------

_cells = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)  # fmt: skip
_keys = st.sampled_from([
    "id", "image", "rating", "label", "category", "score", "policy", "allow", "sensitive",
    "valid", "augmentation", "variant", "sample_id",
])  # fmt: skip
_settings = settings(max_examples=60, deadline=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip


def _only_our_errors(path: Path) -> None:
    for read in (read_labels, load_predictions):
        try:
            read(path)
        except LlavaGuardError as e:
            assert "\n" not in str(e) and "validation error for" not in str(e)


@_settings
@given(rows=st.lists(st.dictionaries(_keys, _cells, max_size=6), max_size=4))
def test_rows_of_any_content_give_one_line_errors(tmp_path, rows):
    _only_our_errors(write_jsonl(tmp_path / "rows.jsonl", rows))


@_settings
@given(data=st.binary(max_size=200), suffix=st.sampled_from([".csv", ".jsonl", ".json"]))
def test_bytes_of_any_kind_give_one_line_errors(tmp_path, data, suffix):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(data)
    _only_our_errors(path)


@_settings
@given(text=st.text(alphabet=string.printable + BOM + "é\u2028", max_size=200))
def test_csv_text_of_any_kind_gives_one_line_errors(tmp_path, text):
    path = tmp_path / "junk.csv"
    path.write_text(text, encoding="utf-8")
    _only_our_errors(path)


_policy = Policy.load()
_labels = [c.label for c in _policy.categories]


@st.composite
def _samples(draw) -> list[LabelledSample]:
    ids = draw(st.lists(st.text(min_size=1, max_size=10).filter(str.strip), min_size=1,
                        max_size=5, unique=True))  # fmt: skip
    out = []
    for sample_id in ids:
        rating = draw(st.sampled_from(["Safe", "Unsafe"]))
        choices = _labels if rating == "Unsafe" else [*_labels, _policy.taxonomy.none_category]
        allow = draw(st.lists(st.sampled_from([c.code for c in _policy.categories]),
                              max_size=2, unique=True))  # fmt: skip
        out.append(LabelledSample(  # an id's suffix is its augmentation (_v2, ...), as read
            id=sample_id, augmentation=augmentation_of(sample_id), rating=rating,
            category=draw(st.sampled_from(choices)),
            policy=_policy.with_states(allow=allow), rationale=draw(st.text(max_size=30)),
        ))  # fmt: skip
    return out


@_settings
@given(samples=_samples())
def test_written_labels_read_back_as_the_same_samples(tmp_path, samples):
    back = read_labels(write_labels(samples, tmp_path / "l.jsonl"))
    assert [label_row(s) for s in back] == [label_row(s) for s in samples]


def test_iter_rows_reads_every_format_the_same(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"id": "a", "rating": "Safe"}, {"id": "b", "rating": "Unsafe"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    write_csv(tmp_path / "t.csv", rows, bom=True)
    write_jsonl(tmp_path / "t.jsonl", rows, prefix=BOM)
    for name in ("t.parquet", "t.csv", "t.jsonl"):
        assert list(iter_rows(tmp_path / name)) == rows, name


def test_an_empty_test_split_is_no_samples_for_training_but_an_error_to_evaluate(tmp_path):
    from llavaguard.errors import ConfigError

    (tmp_path / "test.labels.jsonl").write_text("")
    assert read_labels(tmp_path / "test.labels.jsonl", empty_ok=True) == []
    with pytest.raises(ConfigError, match="no labelled samples"):
        read_labels(tmp_path / "test.labels.jsonl")
