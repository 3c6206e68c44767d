"""Teacher rationales: the filters, the prompt, retries, rejection, errors and resume with a
scripted engine (its answers are chosen, so every path is reachable), and the documented
example end to end through the real CLI with a tiny real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llavaguard.dataset.build import augment
from llavaguard.dataset.rationales import (
    PROMPT_ID,
    Candidate,
    RationaleConfig,
    check,
    contradiction,
    generate_rationales,
    length,
    parse_teacher,
    rejected_path,
    repeats,
    teacher_prompt,
    unfinished,
)
from llavaguard.engines import Engine, GenerationConfig, VisionRequest
from llavaguard.errors import ConfigError, EngineError
from llavaguard.inputs.labels import read_labels
from llavaguard.policy import Policy

CFG = RationaleConfig()
O6 = "O6: Weapons or Substance Abuse"
GOOD = {
    "Unsafe": "The image shows a rifle held by a person. Weapons are covered by category O6.",
    "Safe": "The image shows a quiet beach at sunset. None of the policy categories applies.",
}


def cand(text: str, rating: str = "Unsafe", teacher_rating: str | None = None) -> Candidate:
    return Candidate(text, rating, O6 if rating == "Unsafe" else "NA: None applying",
                     teacher_rating)  # fmt: skip


# ---- filters, parsing, prompt ------------------------------------------------------------


def test_repeats_length_and_unfinished():
    assert repeats(cand("A gun. A knife. a gun!"), CFG) == "repeats the sentence 'a gun!'"
    assert repeats(cand("A gun is shown. A knife is shown."), CFG) is None
    assert length(cand("Too short."), CFG) == "10 characters, fewer than 40"
    assert length(cand("x" * 1201 + "."), CFG) == "1202 characters, more than 1200"
    assert length(cand("x" * 39 + "."), CFG) is None
    assert unfinished(cand("The image shows a rifle held by"), CFG) == "ends mid-sentence"
    assert unfinished(cand('It says "stop."'), CFG) is None


@pytest.mark.parametrize(
    ("rating", "text", "objects"),
    [
        ("Unsafe", "The image shows a person aiming a rifle, which violates O6.", False),
        ("Unsafe", "The knife is not safe to hold, and this violates O6.", False),
        ("Unsafe", "While hunting scenes are allowed, this one glorifies the weapon.", False),
        ("Unsafe", "This content is not acceptable under O6.", False),
        ("Unsafe", "The image is safe because nothing harmful happens.", True),
        ("Unsafe", "The image does not violate the policy.", True),
        ("Unsafe", "It doesn't violate anything in the policy.", True),
        ("Unsafe", "A rifle is shown, but the content is allowed.", True),
        ("Unsafe", "The picture complies with the guidelines.", True),
        ("Safe", "A beach at sunset. Nothing in it is unsafe.", False),
        ("Safe", "It does not violate any category of the policy.", False),
        ("Safe", "It might look unsafe at first, but it shows a toy.", False),
        ("Safe", "The image is unsafe.", True),
        ("Safe", "There is no weapon, but the image violates O1.", True),
    ],
)
def test_contradiction_catches_rationales_that_argue_the_other_rating(rating, text, objects):
    assert (contradiction(cand(text, rating), CFG) is not None) == objects


def test_a_teacher_rating_that_differs_is_a_contradiction_and_check_names_the_filter():
    assert contradiction(cand(GOOD["Unsafe"], "Unsafe", "Safe"), CFG) == (
        "the teacher rated it Safe"
    )
    assert check(cand(GOOD["Unsafe"], "Unsafe", "Unsafe"), CFG) is None
    assert check(cand("Short. Short."), CFG).startswith("repeats: ")  # the first filter wins
    only = RationaleConfig(filters=["length"])
    assert check(cand("The image is safe and fine overall, nothing to see."), only) is None
    with pytest.raises(ConfigError, match=r"unknown filter 'nope' \(valid: repeats, length"):
        RationaleConfig(filters=["nope"])
    with pytest.raises(ConfigError, match=r"min chars \(50\) must be below max chars \(50\)"):
        RationaleConfig(min_chars=50, max_chars=50)


def test_parse_teacher_reads_json_or_plain_text():
    fenced = '```json\n{"rating": "Safe", "category": "NA", "rationale": "A cat  sits."}\n```'
    assert parse_teacher(fenced) == ("A cat sits.", "Safe")
    assert parse_teacher('{"rating": "unsafe", "rationale": "A rifle is"') == (
        "A rifle is",
        "Unsafe",
    )  # repaired; the unfinished filter catches the cut
    assert parse_teacher('Rationale: "The image shows a cat."') == ("The image shows a cat.", None)
    assert parse_teacher("The set {a, b} is shown.") == ("The set {a, b} is shown.", None)
    assert parse_teacher('{"rating": "Unsafe", "category": "O6"}') == ("", "Unsafe")


def test_prompt_states_the_label_under_the_policy():
    policy = Policy.load()
    text = teacher_prompt(policy, "Unsafe", "O6")
    assert text.startswith(policy.text)
    assert f"rating: Unsafe\ncategory: {O6}\n" in text
    assert "the guidelines it violates" in text and "2 to 4 sentences" in text
    assert "none of the policy categories applies" in teacher_prompt(policy, "Safe", "NA")
    assert "does not violate its guidelines" in teacher_prompt(policy, "Safe", "O4")
    assert len(PROMPT_ID) == 16 and int(PROMPT_ID, 16) >= 0
    with pytest.raises(ConfigError, match="category 'O42' is not in policy"):
        teacher_prompt(policy, "Unsafe", "O42")


# ---- the run, with a scripted teacher ------------------------------------------------------


class Scripted(Engine):
    """A teacher whose answer depends on the label in the prompt and the try (the seed)."""

    name = "scripted"

    def __init__(self, answer, fail_red: bool = False, interrupt_on: int | None = None):
        self.model_id = "scripted-teacher"
        self.answer = answer
        self.fail_red = fail_red
        self.interrupt_on = interrupt_on
        self.calls: list[tuple[int, GenerationConfig]] = []

    def generate(self, requests, config=None):
        self.calls.append((len(requests), config))
        if self.interrupt_on == len(self.calls):
            raise KeyboardInterrupt
        if self.fail_red and any(r.images[0].getpixel((0, 0)) == (255, 0, 0) for r in requests):
            raise EngineError("the server refused an image")
        return [self.answer(r, config) for r in requests]


def label_of(r: VisionRequest) -> str:
    return "Unsafe" if "\nrating: Unsafe\n" in r.text else "Safe"


def good(r: VisionRequest, config: GenerationConfig) -> str:
    return json.dumps({"rating": label_of(r), "rationale": GOOD[label_of(r)]})


def write_labels(tmp_path: Path, n: int = 4, colors=None) -> Path:
    from PIL import Image

    (tmp_path / "img").mkdir(exist_ok=True)
    rows = []
    for i in range(n):
        color = (colors or {}).get(i, (0, 0, 20 * i))
        Image.new("RGB", (8, 8), color).save(tmp_path / "img" / f"{i}.png")
        unsafe = i % 2 == 0
        rows.append({"id": f"r{i}", "image": f"img/{i}.png", "rating": "Unsafe" if unsafe
                     else "Safe", "category": "O6" if unsafe else "", "score_word": i})  # fmt: skip
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return labels


def rows_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_retries_sample_anew_then_accept_or_reject_with_provenance(tmp_path):
    def answer(r, config):  # Unsafe: right on the second try; Safe: always argues Unsafe
        if label_of(r) == "Unsafe":
            rating = "Unsafe" if config.seed == 1 else "Safe"
            return json.dumps({"rating": rating, "rationale": GOOD["Unsafe"]})
        return "The image is unsafe, since it violates category O1 of the policy."

    teacher = Scripted(answer)
    out = tmp_path / "out" / "rationales.jsonl"
    summary = generate_rationales(write_labels(tmp_path), out, teacher)
    assert [(n, c.temperature, c.seed) for n, c in teacher.calls] == [
        (4, 0.0, 0), (4, 0.7, 1), (2, 0.7, 2),
    ]  # fmt: skip
    assert summary | {"seconds": 0} == summary | {
        "rows": 4, "skipped": 0, "new": 4, "ok": 2, "rejected": 2, "errors": 0,
        "reasons": {"contradiction": 2}, "teacher_model": "scripted-teacher",
        "teacher_engine": "scripted", "prompt_id": PROMPT_ID, "policy_id": Policy.load().id,
        "seconds": 0,
    }  # fmt: skip
    ok = rows_of(out)
    assert [r["id"] for r in ok] == ["r0", "r2"]
    row = ok[0]
    assert row["rationale"] == GOOD["Unsafe"] and row["status"] == "ok" and row["reason"] is None
    assert row["attempts"] == 2 and row["generation"]["temperature"] == 0.7
    assert row["generation"]["seed"] == 1 and row["score_word"] == 0  # input columns kept
    assert row["image"] == str((tmp_path / "img" / "0.png").resolve())
    assert row["category"] == O6 and row["teacher_model"] == "scripted-teacher"
    assert row["prompt_id"] == PROMPT_ID and row["time"].endswith("+00:00")
    rejected = rows_of(rejected_path(out))
    assert rejected_path(out).name == "rationales.rejected.jsonl"
    assert [(r["id"], r["status"], r["attempts"], r["rationale"]) for r in rejected] == [
        ("r1", "rejected", 3, ""), ("r3", "rejected", 3, ""),
    ]  # fmt: skip
    assert rejected[0]["reason"].startswith("contradiction: says unsafe: ")
    assert rejected[0]["last_candidate"].startswith("The image is unsafe")
    # dataset build reads the output as it is
    images = read_labels(out)
    assert [(i.id, i.rationale) for i in images] == [("r0", GOOD["Unsafe"]), ("r2", GOOD["Unsafe"])]
    assert augment(images)[0].rationale == GOOD["Unsafe"]


def test_keep_rejected_leaves_them_in_the_output_without_a_rationale(tmp_path):
    out = tmp_path / "r.jsonl"
    cfg = RationaleConfig(drop_rejected=False, attempts=1)
    summary = generate_rationales(write_labels(tmp_path), out, Scripted(lambda r, c: "Short."),
                                  config=cfg)  # fmt: skip
    assert summary["rejected"] == 4 and summary["reasons"] == {"length": 4}
    assert [i.rationale for i in read_labels(out)] == [""] * 4
    assert rows_of(rejected_path(out)) == []


def test_bad_images_and_failed_requests_are_error_rows_and_the_batch_goes_on(tmp_path):
    labels = write_labels(tmp_path, 4, colors={1: (255, 0, 0)})
    (tmp_path / "img" / "2.png").write_bytes(b"not an image")
    out = tmp_path / "r.jsonl"
    teacher = Scripted(good, fail_red=True)
    summary = generate_rationales(labels, out, teacher, config=RationaleConfig(batch_size=4))
    assert (summary["ok"], summary["errors"]) == (2, 2)
    assert [r["id"] for r in rows_of(out)] == ["r0", "r3"]
    errors = {r["id"]: r for r in rows_of(rejected_path(out))}
    assert errors["r2"]["status"] == "error" and errors["r2"]["attempts"] == 0
    assert errors["r2"]["reason"].startswith("r2: ") and "\n" not in errors["r2"]["reason"]
    assert errors["r1"]["reason"] == "the server refused an image"
    # errors are done, unless asked to redo them; a fixed image then gets its rationale
    assert generate_rationales(labels, out, teacher)["new"] == 0
    write_labels(tmp_path, 4)
    redo = generate_rationales(labels, out, teacher, config=RationaleConfig(retry_errors=True))
    assert (redo["new"], redo["ok"]) == (2, 2)
    assert sorted(r["id"] for r in rows_of(out)) == ["r0", "r1", "r2", "r3"]
    assert rows_of(rejected_path(out)) == []


def test_resume_skips_finished_ids_and_survives_interrupts_and_cut_lines(tmp_path):
    labels = write_labels(tmp_path, 6)
    out = tmp_path / "r.jsonl"
    teacher = Scripted(good)
    first = generate_rationales(labels, out, teacher, config=RationaleConfig(limit=2))
    assert (first["new"], first["ok"]) == (2, 2)
    stopping = Scripted(good, interrupt_on=2)
    with pytest.raises(KeyboardInterrupt):
        generate_rationales(labels, out, stopping, config=RationaleConfig(batch_size=2))
    assert [r["id"] for r in rows_of(out)] == ["r0", "r1", "r2", "r3"]  # the batch before
    with out.open("a") as f:
        f.write('{"id": "r4", "rationale": "cut off by a cra')  # a crash mid-write
    rest = generate_rationales(labels, out, teacher)
    assert (rest["skipped"], rest["new"], rest["ok"]) == (4, 2, 2)
    assert [r["id"] for r in rows_of(out)] == ["r0", "r1", "r2", "r3", "r4", "r5"]
    calls = len(teacher.calls)
    again = generate_rationales(labels, out, teacher)
    assert (again["skipped"], again["new"], len(teacher.calls)) == (6, 0, calls)
    # a teacher given as a loader is not loaded when nothing is left, and closed after use
    idle = generate_rationales(labels, out, lambda: pytest.fail("loaded for nothing"))
    assert (idle["new"], idle["teacher_model"]) == (0, None)
    closed = []
    teacher.close = lambda: closed.append(True)
    generate_rationales(labels, out, lambda: teacher, config=RationaleConfig(overwrite=True))
    assert closed == [True] and len(rows_of(out)) == 6


def test_labels_resolve_under_the_given_custom_policy_with_its_own_codes(tmp_path):
    policy = tmp_path / "custom.yaml"
    policy.write_text(
        "name: kitchen\npreamble: Check the image against these categories.\ncategories:\n"
        "  - {code: K1, name: Knives, should_not: [Show knives.]}\n"
        "  - {code: K2, name: Open Flames, should_not: [Show open flames.]}\n"
    )
    labels = write_labels(tmp_path, 2)
    labels.write_text(labels.read_text().replace('"O6"', '"K2"'))
    out = tmp_path / "r.jsonl"
    summary = generate_rationales(labels, out, Scripted(good), policy=str(policy))
    assert summary["ok"] == 2 and summary["policy_id"] == Policy.load(policy).id
    assert [r["category"] for r in rows_of(out)] == ["K2: Open Flames", "NA: None applying"]


def test_another_policy_is_refused_and_overwrite_starts_over(tmp_path):
    labels = write_labels(tmp_path, 2)
    out = tmp_path / "r.jsonl"
    generate_rationales(labels, out, Scripted(good))
    variant = Policy.load(allow="O1")
    with pytest.raises(ConfigError, match=r"r\.jsonl holds rationales with policy_id '16c7"):
        generate_rationales(labels, out, Scripted(good), policy=variant)
    fresh = generate_rationales(labels, out, Scripted(good), policy=variant,
                                config=RationaleConfig(overwrite=True))  # fmt: skip
    assert fresh["new"] == 2 and {r["policy_id"] for r in rows_of(out)} == {variant.id}


def test_bad_options_are_one_line_errors(tmp_path, capsys):
    from llavaguard.cli import main

    labels = write_labels(tmp_path, 1)
    base = ["dataset", "rationales", str(labels), "-o", str(tmp_path / "r.jsonl"), "-m", "x"]
    for extra, message in (
        (["--filters", "repeats,nope"], "unknown filter 'nope'"),
        (["--base-url", "http://h/v1"], "--base-url and --api-key go with --engine vllm or openai"),
        (["--policy", "nope"], "nope"),
    ):
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and len(err.splitlines()) == 1


# ---- end to end: the documented example, through the CLI, with a tiny real model ----------


@pytest.mark.slow
def test_documented_example_runs_and_resumes_with_a_real_tiny_model(tmp_path):
    import re

    from test_docs import run_example

    _, res = run_example("dataset.md", tmp_path, marker="<!-- example:rationales")
    starts = [m.start() for m in re.finditer(r'^\{\n  "rows"', res.stdout, re.M)]
    first, second = (json.JSONDecoder().raw_decode(res.stdout, i)[0] for i in starts)
    assert (first["new"], first["ok"] + first["rejected"], first["errors"]) == (3, 3, 0)
    assert (second["skipped"], second["new"]) == (3, 0)  # the rerun does no new work
    rows = rows_of(tmp_path / "rationales.jsonl")
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    for r in rows:
        assert r["teacher_engine"] == "transformers" and r["teacher_model"] == "teacher"
        assert r["prompt_id"] == PROMPT_ID and r["policy_id"] == Policy.load().id
        assert r["generation"]["max_new_tokens"] == 32 and 1 <= r["attempts"] <= 2
        assert r["status"] in ("ok", "rejected") and (r["status"] == "ok") == bool(r["rationale"])
    assert (tmp_path / "with-rationales" / "summary.json").is_file()
