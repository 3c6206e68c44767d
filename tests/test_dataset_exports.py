"""The exports of ``llavaguard dataset build`` that trainers read: a Hugging Face datasets
folder that carries its images, LLaMA-Factory sharegpt with its dataset_info.json, and the
summary people read (Markdown and a plot) agreeing with summary.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PIL import Image

from llavaguard.dataset.build import build_dataset
from llavaguard.errors import ConfigError
from llavaguard.inputs.images import load_image
from llavaguard.testing import make_sample_images

from conftest import cli

CATEGORIES = ["O1", "O2", "O6"]


def labelled_images(root: Path) -> Path:
    """Six sample images (JPEG, RGBA PNG, WebP, GIF, BMP, TIFF) and a camera JPEG that is
    stored sideways with an EXIF rotation; every other one Unsafe."""
    paths = make_sample_images(root / "img", 6)
    rotated = root / "img" / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (40, 20), (200, 30, 30)).save(rotated, exif=exif)
    rows = []
    for i, p in enumerate([*paths, rotated]):
        unsafe = i % 2 == 1
        rows.append({"id": f"i{i}", "image": str(p.relative_to(root)),
                     "rating": "Unsafe" if unsafe else "Safe",
                     "category": CATEGORIES[i % 3] if unsafe else "",
                     "rationale": f"because {i}"})  # fmt: skip
    labels = root / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return labels


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """One build with every format; the hf folder is then moved away from the images,
    which are deleted, and the pixels the Guard would see are kept to compare."""
    root = tmp_path_factory.mktemp("exports")
    labels = labelled_images(root)
    info = root / "ds" / "dataset_info.json"  # a LLaMA-Factory data folder's own entries
    info.parent.mkdir()
    info.write_text(json.dumps({"mine": {"file_name": "mine.json"}}))
    summary = build_dataset(str(labels), str(root / "ds"), test_fraction=0.3, seed=0)
    pixels = {p.name: load_image(p).tobytes() for p in (root / "img").iterdir()}
    moved = tmp_path_factory.mktemp("elsewhere") / "hf"
    shutil.copytree(root / "ds" / "hf", moved)
    shutil.rmtree(root / "ds" / "hf")
    shutil.rmtree(root / "img")
    return {"root": root, "out": root / "ds", "hf": moved, "summary": summary, "pixels": pixels}


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def without_nulls(value):
    """What Arrow's unified content struct adds (``text: None`` on image entries) removed."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def test_hf_folder_loads_without_the_source_images(built):
    from datasets import load_from_disk

    ds = load_from_disk(str(built["hf"]))
    assert set(ds) == {"train", "test"}
    for split in ("train", "test"):
        labels = lines(built["out"] / f"{split}.labels.jsonl")
        trl = lines(built["out"] / f"{split}.trl.jsonl")
        rows = list(ds[split])
        assert [r["id"] for r in rows] == [r["id"] for r in labels] == [r["id"] for r in trl]
        for row, label, t in zip(rows, labels, trl, strict=True):
            assert without_nulls(row["prompt"]) == t["prompt"]
            assert row["completion"] == t["completion"]  # text entries only: no nulls
            assert row["prompt"][0]["content"][0] == {"type": "image", "text": None}
            for key in ("rating", "category", "augmentation", "policy", "allow", "sensitive"):
                assert row[key] == label[key], key
            assert row["image_id"] == row["id"].split("_v")[0].split("#")[0]
            (image,) = row["images"]
            assert isinstance(image, Image.Image)
            name = Path(label["image"]).name
            # the pixels load_image gives the Guard: rotation applied, transparency on white
            assert image.convert("RGB").tobytes() == built["pixels"][name], name
    defaults = [r for r in ds["train"] if r["augmentation"] is None]
    assert defaults and all(r["allow"] == [] and r["sensitive"] == [] for r in defaults)


def test_a_loaded_row_renders_with_a_model_processor(built, tiny_models):
    from datasets import load_from_disk
    from transformers import AutoProcessor

    from llavaguard.policy import Policy

    processor = AutoProcessor.from_pretrained(tiny_models("llava-onevision"))
    row = load_from_disk(str(built["hf"]))["train"][0]
    text = processor.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
    assert text.count("<image>") == 1
    assert Policy.load().text in text
    assert row["completion"][0]["content"][0]["text"] in text
    inputs = processor(text=[text], images=[row["images"]], return_tensors="pt")
    assert inputs["pixel_values"].shape[0] == 1


def test_sharegpt_files_and_dataset_info_for_llama_factory(built):
    out = built["out"]
    for split in ("train", "test"):
        rows = json.loads((out / f"{split}.sharegpt.json").read_text())
        llava = json.loads((out / f"{split}.llava.json").read_text())
        assert len(rows) == len(llava) > 0
        for row, ref in zip(rows, llava, strict=True):
            user, assistant = row["messages"]
            assert (user["role"], assistant["role"]) == ("user", "assistant")
            assert user["content"].count("<image>") == 1 and user["content"].startswith("<image>")
            assert user["content"] == ref["conversations"][0]["value"]
            assert assistant["content"] == ref["conversations"][1]["value"]
            assert row["images"] == [ref["image"]] and Path(row["images"][0]).is_absolute()
    info = json.loads((out / "dataset_info.json").read_text())
    assert info["mine"] == {"file_name": "mine.json"}  # entries already there are kept
    assert info["llavaguard_train"] == {
        "file_name": "train.sharegpt.json",
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                 "assistant_tag": "assistant"},
    }  # fmt: skip
    assert info["llavaguard_test"]["file_name"] == "test.sharegpt.json"


def test_summary_markdown_and_plot_show_the_counts_of_the_json(built):
    out = built["out"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary == built["summary"]
    assert summary["formats"] == ["hf", "llava", "trl", "sharegpt", "labels"]
    md = (out / "summary.md").read_text()
    train, test = summary["splits"]["train"], summary["splits"]["test"]
    for key in ("samples", "images"):
        assert f"| {key} | {train[key]} | {test[key]} | {train[key] + test[key]} |" in md
    for key in ("ratings", "categories", "augmentations"):
        for name in set(train[key]) | set(test[key]):
            a, b = train[key].get(name, 0), test[key].get(name, 0)
            assert f"| {name} | {a} | {b} | {a + b} |" in md, (key, name)
        for split in (train, test):  # the cross-tabs the plot draws add up to the counts
            by = split["by_category" if key == "categories" else "by_augmentation"]
            if key != "ratings":
                assert {n: sum(c.values()) for n, c in by.items()} == split[key]
    assert "recipe v3, v3, v3, v2" in md and "seed 0" in md and "test fraction 0.3" in md
    png = out / "summary.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(png) as im:
        assert im.size[0] > 500 and im.size[1] > 200


def test_formats_choose_the_exports_and_bad_inputs_stop_with_one_line(tmp_path):
    labels = labelled_images(tmp_path)
    build_dataset(str(labels), str(tmp_path / "few"), formats=["llava"])
    written = {p.name for p in (tmp_path / "few").iterdir()}
    assert written == {f"{split}.{fmt}" for split in ("train", "test")
                       for fmt in ("llava.json", "labels.jsonl")} | {
        "summary.json", "summary.md", "summary.png"}  # fmt: skip
    from datasets import load_from_disk

    build_dataset(str(labels), str(tmp_path / "all"), test_fraction=0.0, formats=["hf"])
    assert set(load_from_disk(str(tmp_path / "all" / "hf"))) == {"train"}  # empty test left out
    with pytest.raises(ConfigError, match=r"unknown format 'csv' \(valid: hf, llava, trl, "):
        build_dataset(str(labels), str(tmp_path / "x"), formats=["csv"])
    (tmp_path / "img" / "sample-000.jpg").write_bytes(b"not an image")
    with pytest.raises(ConfigError, match=r"^hf export: .*sample-000\.jpg"):
        build_dataset(str(labels), str(tmp_path / "broken"))
    assert not (tmp_path / "broken" / "hf").exists()
    (tmp_path / "img" / "sample-000.jpg").unlink()
    out = cli("dataset", "build", str(labels), "-o", str(tmp_path / "cli"))
    assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "image not found" in out.stderr and "--formats" in out.stderr
    out = cli("dataset", "build", str(labels), "-o", str(tmp_path / "cli"),
                  "--formats", "sharegpt")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "cli" / "train.sharegpt.json").is_file()
    assert not (tmp_path / "cli" / "hf").exists()
    assert "by_category" not in out.stdout  # the cross-tabs stay in the summary files
