"""End to end: the real CLI, tiny real models of each family, real photos in several formats."""

import json
from importlib import resources
from pathlib import Path

import pytest
from PIL import Image

from llavaguard.policy import Policy
from llavaguard.testing import FAMILIES

from conftest import cli, run_cli

# llava-onevision (the default model's family) runs in the fast tier, the others with the slow
# tests; so do the exit-code test, which starts a real process, and the long runs.
FAMILY_PARAMS = [
    pytest.param(f, marks=() if f == "llava-onevision" else pytest.mark.slow) for f in FAMILIES
]

RECORD_KEYS = {
    "image", "rating", "category", "rationale", "score", "valid", "error", "raw",
    "policy", "policy_id", "model", "engine", "category_scores", "mode",
    "violations", "raw_score",  # null without --multi-label / --calibration
}  # fmt: skip


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    """Real photographs (shipped with scikit-image) saved in the formats users have."""
    folder = tmp_path_factory.mktemp("photos")
    data = resources.files("skimage") / "data"

    def photo(name: str) -> Image.Image:
        with resources.as_file(data / name) as p, Image.open(p) as im:
            return im.copy()

    photo("astronaut.png").save(folder / "astronaut.jpg", quality=90)
    photo("chelsea.png").save(folder / "cat.webp")
    photo("coffee.png").convert("RGBA").save(folder / "coffee.png")
    photo("rocket.jpg").save(folder / "nested-rocket.tiff")
    photo("camera.png").save(folder / "camera-gray.bmp")  # 8-bit grayscale
    photo("motorcycle_left.png").convert("P", palette=Image.Palette.ADAPTIVE).save(
        folder / "motorcycle.gif"
    )
    sub = folder / "sub"
    sub.mkdir()
    photo("hubble_deep_field.jpg").save(sub / "hubble.JPG")
    (folder / "notes.txt").write_text("not an image, skipped when expanding the folder")
    return folder


@pytest.fixture(scope="session", params=FAMILY_PARAMS)
def tiny_model(request, tiny_models) -> Path:
    return tiny_models(request.param)


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_tiny_model_command_builds_the_shared_model(family, tiny_models, tmp_path):
    out = tmp_path / "model"
    res = cli("testing", "tiny-model", str(out), "--family", family)
    assert res.returncode == 0, res.stderr
    assert Path(res.stdout.strip()) == out
    # the command builds what build_tiny_model builds, which the other tests share
    shared = tiny_models(family)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (out / name).read_bytes() == (shared / name).read_bytes(), name


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_assess_folder_of_photos(tiny_model, photos, tmp_path):
    out = tmp_path / "results.jsonl"
    res = cli(
        "assess", str(photos), "--model", str(tiny_model), "--max-new-tokens", "24",
        "--batch-size", "3", "--allow", "O4", "--output", str(out),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    records = read_jsonl(out)
    expected = sorted(
        str(p) for p in photos.rglob("*") if p.suffix.lower() != ".txt" and p.is_file()
    )
    assert [r["image"] for r in records] == expected
    policy = Policy.load(allow="O4")
    for r in records:
        assert set(r) == RECORD_KEYS and r["violations"] is None and r["raw_score"] is None
        assert r["error"] is None or not r["valid"]
        assert isinstance(r["raw"], str)  # every photo reached the model
        assert r["rating"] in (None, "Safe", "Unsafe")
        assert r["category"] is None or r["category"] in policy.labels
        assert r["policy_id"] == policy.id and r["policy"] == "llavaguard-v1.2 (allow O4)"
        assert r["model"] == str(tiny_model) and r["engine"] == "transformers"
    assert "7 images" in res.stderr


@pytest.mark.slow
def test_bad_files_get_records_and_exit_1(tiny_model, photos, tmp_path):
    """A real process: its exit code is 1 when some inputs failed."""
    broken = tmp_path / "broken"
    broken.mkdir()
    good = photos / "astronaut.jpg"
    (broken / "truncated.jpg").write_bytes(good.read_bytes()[:2000])
    (broken / "empty.png").write_bytes(b"")
    (broken / "text.jpg").write_text("hello")
    out = tmp_path / "out.json"
    res = run_cli(
        "assess", str(broken), str(good), str(tmp_path / "missing.png"),
        "--model", str(tiny_model), "--max-new-tokens", "8", "--format", "json", "-o", str(out),
    )  # fmt: skip
    assert res.returncode == 1, res.stderr
    records = json.loads(out.read_text())
    by_name = {Path(r["image"]).name: r for r in records}
    assert list(by_name) == [
        "empty.png",
        "text.jpg",
        "truncated.jpg",
        "astronaut.jpg",
        "missing.png",
    ]
    for name in ("empty.png", "text.jpg", "truncated.jpg", "missing.png"):
        r = by_name[name]
        assert r["raw"] is None and not r["valid"] and r["error"], r
        assert "\n" not in r["error"]
    assert by_name["astronaut.jpg"]["raw"] is not None
    assert "4 failed" in res.stderr


@pytest.mark.slow
def test_python_api_matches_cli(tiny_model, photos, tmp_path):
    from llavaguard import Guard, GuardSpec
    from llavaguard.engines import GenerationConfig

    files = sorted(str(p) for p in photos.glob("*.*") if p.suffix != ".txt")
    out = tmp_path / "cli.jsonl"
    res = cli(
        "assess", *files, "--model", str(tiny_model), "--max-new-tokens", "16", "-o", str(out)
    )
    assert res.returncode == 0, res.stderr
    guard = Guard.from_spec(
        GuardSpec(model=str(tiny_model), generation=GenerationConfig(max_new_tokens=16))
    )
    api = guard.assess(files, batch_size=4)
    from_cli = read_jsonl(out)
    assert [a.model_dump(mode="json") for a in api] == from_cli


@pytest.mark.slow
def test_hundreds_of_broken_files_through_the_cli(tmp_path, tiny_models):
    """Every malformed file gets exactly one record, in order; the run does not crash."""
    from test_images import CORPUS_LIMITS, broken_corpus

    model = tiny_models("llava-onevision")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    maybe, by_kind = broken_corpus(corpus)
    must_fail = [p for paths in by_kind.values() for p in paths]
    # a directory argument is a folder to expand, not a broken file: leave it out here
    inputs = [str(p) for p in maybe + must_fail if not p.is_dir()]
    out = tmp_path / "out.jsonl"
    res = cli(
        "assess", *inputs, "--model", str(model), "--max-new-tokens", "2",
        "-b", "16", "-o", str(out),
        "--max-file-mb", str(CORPUS_LIMITS.max_bytes / 2**20),  # exact: a power-of-two divisor
    )  # fmt: skip
    assert res.returncode == 1, res.stderr[-2000:]
    records = read_jsonl(out)
    assert [r["image"] for r in records] == inputs
    failed = [r for r in records if r["raw"] is None]
    assert set(inputs) & {str(p) for p in must_fail} <= {r["image"] for r in failed}
    assert all(r["error"] and "\n" not in r["error"] for r in failed)
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_decoding_options_and_dtype(tiny_models, photos):
    """Sampling repeats with a seed, beams run, and bfloat16 on the CPU works."""
    from llavaguard import Guard, GuardSpec
    from llavaguard.engines import GenerationConfig

    model = tiny_models("qwen2.5-vl")
    files = sorted(str(p) for p in photos.glob("*.jpg"))
    sampled = GenerationConfig(max_new_tokens=12, temperature=0.9, top_p=0.95, top_k=50, seed=7)
    guard = Guard.from_spec(GuardSpec(model=str(model), generation=sampled))
    first = [a.raw for a in guard.assess(files)]
    assert [a.raw for a in guard.assess(files)] == first
    beams = Guard(guard.engine, generation=GenerationConfig(max_new_tokens=12, num_beams=2),
                  constrained=False)  # fmt: skip
    assert all(isinstance(a.raw, str) for a in beams.assess(files))
    bf16_cpu = {"dtype": "bfloat16", "device": "cpu"}
    bf16 = Guard.from_spec(GuardSpec(model=str(model), engine_options=bf16_cpu))
    assert str(bf16.engine.dtype) == "torch.bfloat16"
    assert isinstance(bf16.assess(files[0]).raw, str)
