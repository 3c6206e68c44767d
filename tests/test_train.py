"""``llavaguard train``: TRL fine-tuning of tiny real models, LoRA and full, resumed from a
checkpoint, merged into a folder that ``assess`` and ``serve`` load as they load any model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from llavaguard.dataset.build import build_dataset
from llavaguard.dataset.labels import import_labels
from llavaguard.testing.synthetic import make_benchmark

from conftest import cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "accelerate"


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_models) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train")
    csv = make_benchmark(root / "synthetic", per_category=1, safe=6, discard=1)
    labels = root / "labels.jsonl"
    import_labels(str(csv), str(labels))
    data = root / "data"
    # one policy variant per Unsafe image, not the v1.2 recipe's four: 26 training samples
    # instead of 72 (4 steps an epoch, not 9), each still under its own policy text; what these
    # tests check (steps, evaluations, resuming, merging) does not depend on how many
    build_dataset(str(labels), str(data), test_fraction=0.25, recipe=("v2",))
    base = tiny_models("llava-onevision")  # read only: training writes to its own folder
    return {"root": root, "data": data, "base": base, "images": root / "synthetic" / "images"}


def _train(built, out: Path, *extra: str):
    return cli(
        "train", "--model", str(built["base"]), "--data", str(built["data"]), "-o", str(out),
        "--epochs", "1", "--batch-size", "4", "--effective-batch-size", "8",
        "--eval-samples", "4", "--lr", "1e-3", *extra,
    )  # fmt: skip


@pytest.mark.slow  # trains
def test_full_training_merges_into_a_model_assess_and_serve_load(built):
    from conftest import start_server, stop

    out = built["root"] / "full"
    r = _train(built, out, "--merge", "--train-projector", "--eval-steps", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["steps"] >= 2
    evals = [h for h in summary["log_history"] if "eval_loss" in h]
    scored = [h for h in summary["log_history"] if "eval_rating_accuracy" in h]
    assert evals and scored  # validation loss and rating accuracy during training
    assert 0.0 <= scored[-1]["eval_rating_accuracy"] <= 1.0
    final = summary["final_eval"]  # the last evaluation, with its safeguard figures
    assert "eval_loss" in final and "eval_rating_accuracy" in final
    # the vision tower stayed frozen, the projector and the language model trained
    trainable = summary["trainable_parameters"]
    assert trainable["vision"] == 0 and trainable["projector"] > 0 and trainable["language"] > 0
    merged = out / "merged"
    assert json.loads((merged / "llavaguard.json").read_text())["base"] == str(built["base"])

    images = sorted(built["images"].iterdir())[:2]
    r = cli("assess", *map(str, images), "--model", str(merged), "--max-new-tokens", "16",
                "-o", str(built["root"] / "a.jsonl"))  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [json.loads(x) for x in (built["root"] / "a.jsonl").read_text().splitlines()]
    assert [row["rating"] in ("Safe", "Unsafe") for row in rows] == [True, True]

    proc, url = start_server(merged, "--dtype", "float32")
    try:
        with images[0].open("rb") as f:
            resp = httpx.post(url + "/v1/assess", files={"image": f}, timeout=120)
        assert resp.status_code == 200, resp.text
        assert resp.json()["rating"] in ("Safe", "Unsafe")
    finally:
        stop(proc)


@pytest.mark.slow  # trains
def test_lora_training_resumes_and_merges(built):
    out = built["root"] / "lora"
    r = _train(built, out, "--method", "lora", "--lora-r", "4", "--lora-alpha", "8",
               "--save-steps", "1", "--eval-steps", "100")  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    first = json.loads((out / "train_summary.json").read_text())
    assert (out / "final" / "adapter_config.json").is_file()
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(built["base"])
    language = sum(p.numel() for n, p in base.named_parameters() if "language_model" in n)
    trained = first["trainable_parameters"]
    assert trained["vision"] == trained["projector"] == 0
    assert 0 < trained["language"] < language / 10  # the adapters, not the weights under them
    # two epochs now, launched the multi-device way: resuming picks up the last checkpoint
    # instead of starting over
    r = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(CONFIGS / "single-cpu.yaml"), "-m", "llavaguard", "train",
         "--model", str(built["base"]), "--data", str(built["data"]), "-o", str(out),
         "--epochs", "2", "--batch-size", "4", "--effective-batch-size", "8", "--method", "lora",
         "--lora-r", "4", "--lora-alpha", "8", "--eval-samples", "0", "--resume", "--merge"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    second = json.loads((out / "train_summary.json").read_text())
    assert second["steps"] == 2 * first["steps"]
    assert second["resumed_from"] == str(out / f"checkpoint-{first['steps']}")
    merged = Path(second["merged"])
    assert not (merged / "adapter_config.json").exists()  # LoRA folded in: a plain model
    from llavaguard import Guard, GuardSpec

    image = sorted(built["images"].iterdir())[0]
    float32 = {"dtype": "float32"}
    guard = Guard.from_spec(GuardSpec(model=str(merged), engine_options=float32, mode="triage"))
    a = guard.assess(image)
    assert a.rating in ("Safe", "Unsafe") and a.score is not None
    # merging from the saved adapter (how sharded runs merge) gives the same model
    from llavaguard.train.run import merge

    card = json.loads((out / "final" / "llavaguard.json").read_text())
    from_disk = merge(out / "final", out / "merged-from-disk", card)
    assert not (from_disk / "adapter_config.json").exists()
    b = Guard.from_spec(
        GuardSpec(model=str(from_disk), engine_options=float32, mode="triage")
    ).assess(image)
    assert b.score == pytest.approx(a.score, abs=1e-5) and b.rating == a.rating


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "lora", "--train-vision"], "needs --method full"),
        (["--method", "sgd"], "method"),
    ],
)
def test_bad_options_are_one_line(built, args, message):
    r = _train(built, built["root"] / "bad", *args)
    assert r.returncode == 2
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_missing_dataset_is_one_line(tmp_path):
    r = cli("train", "--model", "x", "--data", str(tmp_path / "none"))
    assert r.returncode == 2 and "no such dataset folder" in r.stderr


@pytest.mark.parametrize("name", ["deepspeed-zero2", "deepspeed-zero3", "fsdp", "single-cpu"])
def test_accelerate_configs_load(name):
    from accelerate.commands.config.config_args import load_config_from_file

    cfg = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    expected = {"deepspeed-zero2": ("DEEPSPEED", 2), "deepspeed-zero3": ("DEEPSPEED", 3),
                "fsdp": ("FSDP", None), "single-cpu": ("NO", None)}[name]  # fmt: skip
    assert cfg.distributed_type.value == expected[0]
    if expected[1]:
        assert cfg.deepspeed_config["zero_stage"] == expected[1]


def test_the_last_evaluation_is_reused_not_repeated():
    from llavaguard.train.run import _evaluation_at

    history = [
        {"loss": 1.0, "step": 4},
        {"eval_loss": 0.5, "step": 4},
        {"eval_rating_accuracy": 0.75, "step": 4},
        {"eval_loss": 0.4, "step": 2},
    ]
    assert _evaluation_at(history, 4) == {"eval_loss": 0.5, "eval_rating_accuracy": 0.75}
    assert _evaluation_at(history, 6) == {}  # no evaluation at the last step: evaluate then
    assert _evaluation_at([{"eval_rating_accuracy": 1.0, "step": 3}], 3) == {}
