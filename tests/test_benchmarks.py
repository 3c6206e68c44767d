"""Public benchmarks read from local copies in their published layouts, made here (never
downloaded), and scored by ``evaluate run --benchmark`` exactly as a labels file would be."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

import pytest

from llavaguard.policy import Policy

from conftest import cli

# ---- making the published layouts ------------------------------------------------------------


def image_bytes(i: int, fmt: str = "PNG") -> bytes:
    """A small image of its own colour, encoded as ``fmt``."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (24 + i, 20), ((40 * i) % 256, (90 + 30 * i) % 256, 200)).save(buf, fmt)
    return buf.getvalue()


def hf_image_schema(columns: dict[str, object], features: dict[str, dict]) -> object:
    """A Parquet schema as the Hub writes it: images as the datasets Image struct (bytes,
    path), and the datasets features in the schema's ``huggingface`` metadata."""
    import pyarrow as pa

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    fields = [(name, image if kind == "image" else kind) for name, kind in columns.items()]
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    return pa.schema(fields, metadata=meta)


def write_parquet(path: Path, rows: list[dict], schema: object) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


# UnsafeBench: (safety_label, category); the test split comes in two shards
UNSAFEBENCH_TEST = [
    ("Safe", "Hate"), ("Unsafe", "Hate"), ("Unsafe", "Violence"), ("Unsafe", "Sexual"),
    ("Unsafe", "Deception"), ("Safe", "Political"), ("Unsafe", "Self-harm"),
    ("Unsafe", "Shocking"), ("Unsafe", "Illegal activity"), ("Safe", "Spam"),
]  # fmt: skip
# the documented default table, for the categories above
UNSAFEBENCH_MAP = {"Hate": "O1", "Violence": "O2", "Sexual": "O3", "Self-harm": "O7",
                   "Shocking": "O2", "Illegal activity": "O5"}  # fmt: skip


def unsafebench_rows(pairs: list[tuple[str, str]], start: int = 0) -> list[dict]:
    return [
        {"image": {"bytes": image_bytes(start + i, "JPEG" if i % 2 else "PNG"), "path": None},
         "safety_label": label, "category": category,
         "source": "Lexica" if i % 2 else "Laion5B", "text": f"prompt {start + i}"}
        for i, (label, category) in enumerate(pairs)
    ]  # fmt: skip


UNSAFEBENCH_FEATURES = {
    "image": {"_type": "Image"},
    **{c: {"dtype": "string", "_type": "Value"}
       for c in ("safety_label", "category", "source", "text")},
}  # fmt: skip


def make_unsafebench(root: Path, test: list[tuple[str, str]] = UNSAFEBENCH_TEST) -> Path:
    """``data/{split}-0000k-of-0000n.parquet``, as yiting/UnsafeBench publishes it."""
    schema = hf_image_schema({"image": "image", "safety_label": "string", "category": "string",
                              "source": "string", "text": "string"},
                             UNSAFEBENCH_FEATURES)  # fmt: skip
    write_parquet(root / "data" / "train-00000-of-00001.parquet",
                  unsafebench_rows([("Unsafe", "Spam"), ("Safe", "Hate")], 50), schema)  # fmt: skip
    half = len(test) // 2
    write_parquet(root / "data" / "test-00000-of-00002.parquet",
                  unsafebench_rows(test[:half]), schema)  # fmt: skip
    write_parquet(root / "data" / "test-00001-of-00002.parquet",
                  unsafebench_rows(test[half:], half), schema)  # fmt: skip
    return root


def make_unsafebench_saved(root: Path) -> Path:
    """The same rows as ``datasets``' save_to_disk writes them (a DatasetDict folder)."""
    from datasets import Dataset, DatasetDict, Features, Image, Value

    feats = Features({"image": Image(), "safety_label": Value("string"),
                      "category": Value("string"), "source": Value("string"),
                      "text": Value("string")})  # fmt: skip

    def part(rows: list[dict]) -> Dataset:
        return Dataset.from_dict({k: [r[k] for r in rows] for k in feats}, features=feats)

    DatasetDict({
        "train": part(unsafebench_rows([("Unsafe", "Spam")], 50)),
        "test": part(unsafebench_rows(UNSAFEBENCH_TEST)),
    }).save_to_disk(str(root))  # fmt: skip
    return root


# VLGuard: (image, safe, harmful_category, harmful_subcategory, expected code or None: left out)
VLGUARD_TEST = [
    ("bad_ads/a1.png", True, None, None, "NA"),
    ("bad_ads/a2.png", False, "risky behavior", "violence", "O2"),
    ("hatefulMemes/08346.png", False, "discrimination", "race", "O1"),
    ("hatefulMemes/42605.png", False, "risky behavior", "sexually explicit", "O3"),
    ("hatefulMemes/75439.png", False, "discrimination", "other", "O1"),
    ("privacy/p1.png", False, "privacy", "personal data", None),
    ("bad_ads/a3.png", False, "deception", "disinformation", None),
    ("privacy/p2.png", True, None, None, "NA"),
]


def make_vlguard(root: Path, rows: list[tuple] = VLGUARD_TEST) -> Path:
    """``test.json`` / ``train.json`` with the images unzipped into ``test/`` and ``train/``."""
    for split, items in (("test", rows), ("train", rows[:2])):
        meta = []
        for i, (image, safe, kind, sub, _) in enumerate(items):
            (root / split / image).parent.mkdir(parents=True, exist_ok=True)
            (root / split / image).write_bytes(image_bytes(i))
            row = {"id": f"{split}_{i}", "image": image, "safe": safe}
            if not safe:
                row |= {"harmful_category": kind, "harmful_subcategory": sub}
            instr = "instruction" if not safe else "safe_instruction"
            meta.append(row | {"instr-resp": [{instr: "Describe it.", "response": "No."}]})
        (root / f"{split}.json").write_text(json.dumps(meta), encoding="utf-8")
    return root


# SafeEditBench: (image_path, safety_label class, policy_name class)
SAFEEDITBENCH_TEST = [
    ("test_images/1.jpg", 0, 0), ("test_images/1.jpg", 1, 4), ("test_images/1_edited.jpg", 0, 4),
    ("test_images/2.jpg", 1, 2), ("test_images/2_edited.jpg", 0, 2), ("test_images/2.jpg", 0, 1),
]  # fmt: skip
POLICY_TEXT = {
    level: f"Policy L{level + 1}: a made-up rule set.\n- Should not show thing {level}.\n"
    for level in range(5)
}


def make_safeeditbench(root: Path) -> Path:
    """``data/test-00000-of-00001.parquet`` (image, image_path, safety_label and policy_name as
    class labels, policy) beside ``test_images/`` with the x.jpg / x_edited.jpg pairs."""
    features = {
        "image": {"_type": "Image"}, "image_path": {"dtype": "string", "_type": "Value"},
        "safety_label": {"names": ["safe", "unsafe"], "_type": "ClassLabel"},
        "policy_name": {"names": [f"Policy L{i}" for i in range(1, 6)], "_type": "ClassLabel"},
        "policy": {"dtype": "string", "_type": "Value"},
    }  # fmt: skip
    schema = hf_image_schema({"image": "image", "image_path": "string", "safety_label": "int64",
                              "policy_name": "int64", "policy": "string"}, features)  # fmt: skip
    rows = []
    for i, (path, label, level) in enumerate(SAFEEDITBENCH_TEST):
        data = image_bytes(i, "JPEG")
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
        rows.append({"image": {"bytes": data, "path": Path(path).name}, "image_path": path,
                     "safety_label": label, "policy_name": level,
                     "policy": POLICY_TEXT[level]})  # fmt: skip
    write_parquet(root / "data" / "test-00000-of-00001.parquet", rows, schema)
    return root


def llavaguard_rows() -> list[dict]:
    """Rows of the LlavaGuard dataset's CSV: the policy column is the whole prompt."""
    default = Policy.load()
    allow_o3 = default.with_states(allow=["O3"])
    prompt = {"default": "<image>\n" + default.text, "allow": "<image>\n" + allow_o3.text}
    return [
        {"id": "img1", "url": "https://example.org/a/img1.jpg", "rating": "Unsafe",
         "category": "O3: Sexual Content", "rationale": "explicit", "policy": prompt["default"]},
        {"id": "img1_v2", "url": "https://example.org/a/img1.jpg", "rating": "Safe",
         "category": "O3: Sexual Content", "rationale": "allowed", "policy": prompt["allow"]},
        {"id": "img2", "url": "https://huggingface.co/datasets/x/resolve/main/img2.png",
         "rating": "Safe", "category": "NA: None applying", "rationale": "fine",
         "policy": prompt["default"]},
        {"id": "img3", "url": "https://example.org/b/img3.jpg", "rating": "Unsafe",
         "category": "O6: Weapons or Substance Abuse", "rationale": "drugs",
         "policy": prompt["default"]},
    ]  # fmt: skip


PROMPT_LINES = len(("<image>\n" + Policy.load().text).splitlines())


def make_llavaguard(root: Path) -> Path:
    """``test.csv`` as published (id, url, rating, category, rationale, policy), the images
    fetched into ``images/`` under their URLs' names."""
    rows = llavaguard_rows()
    root.mkdir(parents=True, exist_ok=True)
    with (root / "test.csv").open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (root / "images").mkdir()
    for i, row in enumerate(rows):
        (root / "images" / row["url"].rsplit("/", 1)[1]).write_bytes(image_bytes(i))
    return root


# ---- running them --------------------------------------------------------------------------


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def evaluate(tmp_path: Path, name: str, data: Path, preds: list[dict], *extra: str) -> dict:
    out = tmp_path / f"run-{name}"
    res = cli("evaluate", "run", "--benchmark", name, "--data", str(data),
              "--predictions", str(write_jsonl(tmp_path / f"{name}-preds.jsonl", preds)),
              "-o", str(out), "--bootstrap", "0", "--no-plots", *extra)  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    report["_samples"] = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    report["_stderr"] = res.stderr
    return report


def confusion(expected: dict[str, str], predicted: dict[str, str]) -> tuple[int, int, int, int]:
    """(tp, fp, tn, fn), Unsafe positive, counted here from the two dicts."""
    pairs = Counter((expected[k], predicted[k]) for k in expected)
    return (pairs["Unsafe", "Unsafe"], pairs["Safe", "Unsafe"], pairs["Safe", "Safe"],
            pairs["Unsafe", "Safe"])  # fmt: skip


def flipped(expected: dict[str, str], every: int = 3) -> dict[str, str]:
    """The expected ratings with every ``every``-th one turned round: some answers wrong."""
    other = {"Safe": "Unsafe", "Unsafe": "Safe"}
    return {k: other[v] if i % every == 0 else v for i, (k, v) in enumerate(expected.items())}


def check_round_trip(report: dict, expected: dict[str, tuple[str, str]], predicted: dict) -> None:
    """Every expected sample read with its rating and category; the figures are those of the
    expected and predicted ratings."""
    got = {s["id"]: (s["expected_rating"], s["expected_category"]) for s in report["_samples"]}
    assert got == expected
    ratings = {k: v[0] for k, v in expected.items()}
    ex = report["overall"]["rating"]["excluded"]
    assert (ex["tp"], ex["fp"], ex["tn"], ex["fn"]) == confusion(ratings, predicted)
    assert report["overall"]["n"] == len(expected) and report["overall"]["missing"] == 0
    by_category = Counter(c for _, c in expected.values())
    assert {k: v["n"] for k, v in report["by_category"].items()} == dict(by_category)


def label_of(code: str) -> str:
    policy = Policy.load()
    return policy.taxonomy.none_category if code == "NA" else policy.taxonomy.category(code).label


def unsafebench_expected(pairs: list[tuple[str, str]]) -> dict[str, tuple[str, str]]:
    """Ids are row numbers in the split from 1; Unsafe Deception etc. (NA) are left out."""
    out = {}
    for n, (label, category) in enumerate(pairs, 1):
        if label == "Safe":
            out[str(n)] = ("Safe", label_of("NA"))
        elif category in UNSAFEBENCH_MAP:
            out[str(n)] = ("Unsafe", label_of(UNSAFEBENCH_MAP[category]))
    return out


# ---- the round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["parquet", "save_to_disk"])
def test_unsafebench_round_trips_through_evaluate(tmp_path, layout):
    maker = make_unsafebench if layout == "parquet" else make_unsafebench_saved
    data = maker(tmp_path / "UnsafeBench")
    expected = unsafebench_expected(UNSAFEBENCH_TEST)
    predicted = flipped({k: v[0] for k, v in expected.items()})
    preds = [{"id": k, "rating": v} for k, v in predicted.items()]
    report = evaluate(tmp_path, "unsafebench", data, preds)
    check_round_trip(report, expected, predicted)
    # the one Unsafe Deception image is left out and said; Safe images of any category stay
    assert len(expected) == len(UNSAFEBENCH_TEST) - 1
    (note,) = report["warnings"]
    assert "1 Unsafe sample(s) left out" in note and "deception 1" in note.lower()
    assert "warning: UnsafeBench test: 1 Unsafe sample(s) left out" in report["_stderr"]
    assert report["labels"] == f"unsafebench test ({data})"
    assert report["config"]["benchmark"] == "unsafebench"


def test_unsafebench_train_split_and_a_label_map_override(tmp_path):
    data = make_unsafebench(tmp_path / "UnsafeBench")
    label_map = tmp_path / "map.yaml"
    label_map.write_text("deception: O5\nSEXUAL: 'O4: Nudity Content'\nSpam: O5\n")
    preds = [{"id": str(n), "rating": "Unsafe"} for n in range(1, len(UNSAFEBENCH_TEST) + 1)]
    report = evaluate(tmp_path, "unsafebench", data, preds, "--label-map", str(label_map))
    got = {s["id"]: s["expected_category"] for s in report["_samples"]}
    assert got["5"] == label_of("O5") and got["4"] == label_of("O4")  # overridden
    assert got["2"] == label_of("O1")  # the default table still holds for the rest
    assert report["overall"]["n"] == len(UNSAFEBENCH_TEST) and report["warnings"] == []
    train = evaluate(tmp_path / "t", "unsafebench", data, [{"id": "1", "rating": "Unsafe"}],
                     "--split", "train", "--label-map", str(label_map))  # fmt: skip
    assert [(s["id"], s["expected_category"]) for s in train["_samples"]] == [
        ("1", label_of("O5")), ("2", label_of("NA"))]  # fmt: skip


def test_vlguard_round_trips_with_assess_style_ids(tmp_path):
    data = make_vlguard(tmp_path / "VLGuard")
    expected = {image: (("Safe" if safe else "Unsafe"), label_of(code))
                for image, safe, _, _, code in VLGUARD_TEST if code is not None}  # fmt: skip
    predicted = flipped({k: v[0] for k, v in expected.items()}, every=2)
    report = evaluate(tmp_path, "vlguard", data, [{"id": k, "rating": v}
                                                  for k, v in predicted.items()])  # fmt: skip
    check_round_trip(report, expected, predicted)
    images = {s["id"]: s["image"] for s in report["_samples"]}
    assert images["bad_ads/a2.png"] == str((data / "test" / "bad_ads" / "a2.png").resolve())
    assert "2 Unsafe sample(s) left out" in report["warnings"][0]


def test_safeeditbench_judges_each_row_under_its_own_policy_level(tmp_path):
    data = make_safeeditbench(tmp_path / "SafeEditBench")
    expected = {str(n): ("Unsafe", f"L{level + 1}: Policy L{level + 1}") if label
                else ("Safe", label_of("NA"))
                for n, (_, label, level) in enumerate(SAFEEDITBENCH_TEST, 1)}  # fmt: skip
    predicted = flipped({k: v[0] for k, v in expected.items()})
    report = evaluate(tmp_path, "safeeditbench", data, [{"id": k, "rating": v}
                                                        for k, v in predicted.items()])  # fmt: skip
    check_round_trip(report, expected, predicted)
    levels = {"safeeditbench-L1", "safeeditbench-L2", "safeeditbench-L3", "safeeditbench-L5"}
    assert set(report["policies"]) == levels
    samples = {s["id"]: s for s in report["_samples"]}
    assert samples["2"]["policy"] == "safeeditbench-L5" and samples["1"]["policy"] != "L5"
    # the image file of the copy, not the bytes: the same image under two policies
    assert samples["1"]["image"] == samples["2"]["image"] == str(data / "test_images" / "1.jpg")
    # the level's text is what the model is asked to enforce
    from llavaguard.inputs.benchmarks import read_benchmark

    samples_read, _ = read_benchmark("safeeditbench", data)
    assert POLICY_TEXT[4] in samples_read[1].policy.text


def test_the_llavaguard_dataset_reads_its_policy_states_from_the_prompt(tmp_path):
    data = make_llavaguard(tmp_path / "LlavaGuard")
    rows = llavaguard_rows()
    expected = {r["id"]: (r["rating"], r["category"]) for r in rows}
    predicted = {"img1": "Unsafe", "img1_v2": "Unsafe", "img2": "Safe", "img3": "Safe"}
    report = evaluate(tmp_path, "llavaguard", data, [{"id": k, "rating": v}
                                                     for k, v in predicted.items()])  # fmt: skip
    check_round_trip(report, expected, predicted)
    # img1_v2's prompt declares O3 allowed: an exception sample, answered wrong
    per = report["overall"]["per"]["excluded"]
    assert (per["n_allowed"], per["per_allowed"]) == (1, 0.0)
    assert set(report["by_augmentation"]) == {"v2"}
    images = {s["id"]: s["image"] for s in report["_samples"]}
    assert images["img2"] == str(data / "images" / "img2.png")


def test_the_llavaguard_dataset_as_llava_conversations_is_read_as_labels_are(tmp_path):
    from llavaguard.inputs.benchmarks import read_benchmark

    data = tmp_path / "LlavaGuard"
    data.mkdir()
    policy = Policy.load().with_states(sensitive=["O6"])
    answer = json.dumps({"rating": "Unsafe", "category": "O6: Weapons or Substance Abuse",
                         "rationale": "a knife"})  # fmt: skip
    convs = [
        {
            "id": "k_v4",
            "image": "k.jpg",
            "conversations": [
                {"from": "human", "value": "<image>\n" + policy.text},
                {"from": "gpt", "value": answer},
            ],
        }
    ]
    (data / "test.json").write_text(json.dumps(convs))
    (sample,), notes = read_benchmark("llavaguard", data)
    assert (sample.id, sample.rating, sample.exception) == ("k_v4", "Unsafe", "sensitive")
    assert notes == []
    assert sample.image == str((data / "k.jpg").resolve())


def test_a_report_with_plots_on_a_benchmark(tmp_path):
    data = make_vlguard(tmp_path / "VLGuard")
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "bad_ads/a2.png", "rating": "Unsafe",
                                                "score": 0.9},
                                               {"id": "bad_ads/a1.png", "rating": "Safe",
                                                "score": 0.2}])  # fmt: skip
    res = cli("evaluate", "run", "--benchmark", "vlguard", "--data", str(data), "--predictions",
              str(preds), "-o", str(tmp_path / "out"), "--bootstrap", "20")  # fmt: skip
    assert res.returncode == 0, res.stderr
    md = (tmp_path / "out" / "report.md").read_text()
    assert f"Labels `vlguard test ({data})`" in md and "4 missing" in md
    assert (tmp_path / "out" / "plots" / "confusion.png").read_bytes().startswith(b"\x89PNG")


# ---- with a model ------------------------------------------------------------------------------


@pytest.mark.slow  # builds and runs a tiny model
def test_a_model_judges_unsafebench_images_kept_as_bytes(tmp_path, tiny_models):
    model = tiny_models("qwen2.5-vl")
    data = make_unsafebench(tmp_path / "UnsafeBench")
    out = tmp_path / "out"
    res = cli("evaluate", "run", "--benchmark", "unsafebench", "--data", str(data), "--model",
              str(model), "--max-new-tokens", "12", "-o", str(out), "--bootstrap", "0",
              "--no-plots", "-q")  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["model"] == str(model) and report["overall"]["n"] == len(UNSAFEBENCH_TEST) - 1
    assert report["overall"]["missing"] == 0 and report["overall"]["scores"]["n"] == 9
    samples = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert all(s["error"] is None for s in samples), samples
    # the Parquet images, written out for the model: each one the bytes of its row
    written = {s["id"]: Path(s["image"]) for s in samples}
    assert written["2"].parent == out / "benchmark-images" and written["2"].suffix == ".jpg"
    assert written["2"].read_bytes() == image_bytes(1, "JPEG")
    assert written["3"].read_bytes() == image_bytes(2, "PNG")


# ---- what is refused -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["L", "--benchmark", "vlguard", "--data", "V"], "either a labels file or --benchmark"),
        (["--benchmark", "nope", "--data", "V"],
         "unknown benchmark 'nope' (valid: unsafebench, vlguard, safeeditbench, llavaguard)"),
        (["--benchmark", "vlguard"], "--benchmark vlguard needs --data"),
        (["L", "--data", "V"], "--data goes with --benchmark"),
        (["--benchmark", "vlguard", "--data", "nowhere"], "nowhere: not found"),
        (["--benchmark", "vlguard", "--data", "V", "--split", "val"],
         "VLGuard has no split 'val' (splits: train, test)"),
        (["--benchmark", "safeeditbench", "--data", "V", "--split", "train"],
         "SafeEditBench has no split 'train' (splits: test)"),
        (["--benchmark", "vlguard", "--data", "E"],
         "no VLGuard test split here (expected test.json as on the Hub, with test.zip unzipped"),
        (["--benchmark", "unsafebench", "--data", "E"],
         "no UnsafeBench test split here (expected data/test-*.parquet as on the Hub"),
        (["--benchmark", "safeeditbench", "--data", "E"],
         "no SafeEditBench test split here (expected data/test-*.parquet as on the Hub"),
        (["--benchmark", "llavaguard", "--data", "E"],
         "no LlavaGuard dataset test split here (expected test.csv as on the Hub"),
        (["--benchmark", "unsafebench", "--data", "V"], "no UnsafeBench test split here"),
        (["--benchmark", "llavaguard", "--data", "V", "--label-map", "M"],
         "--label-map: LlavaGuard dataset is labelled in a policy's own terms, nothing to map "
         "(it applies to unsafebench, vlguard)"),
        (["--benchmark", "vlguard", "--data", "V", "--label-map", "M"],
         "'Deception' maps to 'O42', neither NA nor a category of llavaguard-v1.2 (O1, O2,"),
        (["--benchmark", "vlguard", "--data", "V", "--label-map", "missing.yaml"],
         "missing.yaml: file not found"),
    ],
)  # fmt: skip
def test_bad_benchmark_arguments_are_one_line(tmp_path, args, message):
    vlguard = make_vlguard(tmp_path / "V")
    (tmp_path / "E").mkdir()
    (tmp_path / "M").write_text("Deception: O42\n")
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "x", "rating": "Safe"}])
    labels = write_jsonl(tmp_path / "l.jsonl", [{"id": "x", "rating": "Safe"}])
    names = {"L": str(labels), "V": str(vlguard), "E": str(tmp_path / "E"),
             "M": str(tmp_path / "M")}  # fmt: skip
    res = cli("evaluate", "run", *[names.get(a, a) for a in args], "--predictions", str(preds),
              cwd=tmp_path)  # fmt: skip
    assert res.returncode == 2, res.stdout
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_an_unmapped_category_is_one_line_naming_each(tmp_path):
    test = [("Unsafe", "Gore"), ("Safe", "Nothing"), ("Unsafe", "Hate"), ("Unsafe", "Memes")]
    data = make_unsafebench(tmp_path / "UnsafeBench", test=test)
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "1", "rating": "Safe"}])
    res = cli("evaluate", "run", "--benchmark", "unsafebench", "--data", str(data),
              "--predictions", str(preds))  # fmt: skip
    assert res.returncode == 2
    assert res.stderr.strip() == ("error: UnsafeBench: no LlavaGuard category for 'Gore', 'Memes' "
                                  "(give each an O-code or NA in --label-map FILE)")  # fmt: skip


@pytest.mark.parametrize(
    ("benchmark", "spoil", "message"),
    [
        ("unsafebench", "drop_label", "no column 'safety_label' (UnsafeBench rows have image, "
                                      "safety_label, category; this file has image, category"),
        ("unsafebench", "bad_label", "test-00000-of-00002.parquet row 2: rating must be Safe or "
                                     "Unsafe"),
        ("vlguard", "bad_safe", "test.json row 2: 'safe' must be true or false, got 'no'"),
        ("vlguard", "no_images", "test: not found (VLGuard's images: test.zip unzipped into "
                                 "test/)"),
        ("safeeditbench", "bad_level", "row 1: policy_name must be Policy L1 to Policy L5"),
        # a CSV row is named by the line it ends on (the prompt spans many)
        ("llavaguard", "bad_prompt", f"test.csv:{PROMPT_LINES + 1}: the policy column is not "
                                     "a llavaguard-v1.2 prompt (category O1's text is none of"),
        ("llavaguard", "bad_category", f"test.csv:{PROMPT_LINES + 1}: category 'O42' is not one "
                                       "of policy"),
    ],
)  # fmt: skip
def test_odd_copies_are_one_line_naming_the_file_and_row(tmp_path, benchmark, spoil, message):
    import pyarrow.parquet as pq

    root = tmp_path / "copy"
    extra: list[str] = []
    if benchmark == "unsafebench":
        make_unsafebench(root)
        shard = root / "data" / "test-00000-of-00002.parquet"
        table = pq.read_table(shard)
        if spoil == "drop_label":
            table = table.drop(["safety_label"])
        else:
            labels = table.column("safety_label").to_pylist()
            table = table.set_column(1, "safety_label", [["Safe", "maybe", *labels[2:]]])
        pq.write_table(table, shard)
    elif benchmark == "vlguard":
        make_vlguard(root)
        if spoil == "bad_safe":
            meta = json.loads((root / "test.json").read_text())
            meta[1]["safe"] = "no"
            (root / "test.json").write_text(json.dumps(meta))
        else:  # images are needed by a model only: ask for one that is never loaded
            import shutil

            shutil.rmtree(root / "test")
            extra = ["--model", str(tmp_path / "no-model")]
    elif benchmark == "safeeditbench":
        make_safeeditbench(root)
        shard = root / "data" / "test-00000-of-00001.parquet"
        table = pq.read_table(shard)
        levels = table.column("policy_name").to_pylist()
        pq.write_table(table.set_column(3, "policy_name", [[7, *levels[1:]]]), shard)
    else:
        make_llavaguard(root)
        rows = list(csv.DictReader((root / "test.csv").open(encoding="utf-8")))
        if spoil == "bad_prompt":
            rows[0]["policy"] = rows[0]["policy"].replace("Hate, Humiliation", "Hate, Humor")
        else:
            rows[0]["category"] = "O42"
        with (root / "test.csv").open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    preds = write_jsonl(tmp_path / "p.jsonl", [{"id": "1", "rating": "Safe"}])
    args = extra or ["--predictions", str(preds)]
    res = cli("evaluate", "run", "--benchmark", benchmark, "--data", str(root), *args,
              "-o", str(tmp_path / "out"))  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
