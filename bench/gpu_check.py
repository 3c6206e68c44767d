"""The GPU check: on one CUDA device, does llavaguard's transformers engine batch correctly,
what does bfloat16 change, and how fast are full and triage modes at batch 1, 8 and 32?

Driven by bench/gpu_check.sh on a lent accelerator machine (which reaches no registry: see
that script). Stages, in order of importance, each timed against one wall-clock budget; a
stage that would not fit is skipped with the reason recorded, and the JSON is rewritten after
every stage, so a run cut short still brings back what it measured:

1. batching: for each family (tiny models made here with ``llavaguard testing tiny-model``,
   float32), every continuation's score for photos scored one at a time against the same
   photos in one left-padded batch (the accelerator path), and the user's path (triage
   records at batch 1 against batch N); pass when max |dP| is within TOLERANCE. Constrained
   answers batched against one at a time are reported beside it.
2. bf16: the 0.5B architecture (random weights) in bfloat16 against float32, triage, batch 1.
3. throughput: the 0.5B architecture in bfloat16, triage then full mode, at each batch size;
   images/s, generated tokens (random weights run full answers to --tokens), peak memory.

    bash bench/gpu_check.sh                               # on the GPU machine
    PYTHON=/tmp/venv/bin/python bash bench/gpu_check.sh --device cpu --quick   # a dry run

Writes $OUT/gpu-<gpu>.json (bench/.cache/ without $OUT); commit a GPU run's file as
bench/results/gpu-<gpu>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import PHOTOS, photo_paths
from common import run_record

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("llava-onevision", "llava", "qwen2.5-vl")
# Batched and one-at-a-time float32 scores differ only by the order of floating-point sums
# (other kernels for other shapes; cuDNN convolutions may use TF32 by default, about 1e-3
# relative, in the vision towers' patch embeddings). On the CPU the suite holds them to 1e-5.
# A padding, mask or position error moves probabilities by far more than 1e-3 (1e-2 and up),
# and 1e-3 is 20 times under the 0.02 allowed between two engines on one model.
TOLERANCE = 1e-3


class Check:
    """The JSON document, its stages and the budget they share."""

    def __init__(self, out: Path, budget_s: float) -> None:
        self.out, self.started = out, time.monotonic()
        self.deadline = self.started + budget_s
        self.doc: dict[str, Any] = {**run_record(), "budget_s": budget_s, "stages": {}}

    def left(self) -> float:
        return self.deadline - time.monotonic()

    @contextlib.contextmanager
    def stage(self, name: str, need_s: float) -> Iterator[dict[str, Any] | None]:
        """Run a stage if about ``need_s`` seconds are left; record its time, result or error
        (one line, plus the traceback's tail), then write the JSON."""
        entry: dict[str, Any] = {}
        self.doc["stages"][name] = entry
        if self.left() < need_s:
            entry.update(
                status="skipped",
                reason=f"budget: {self.left():.0f} s left, the stage needs about {need_s:.0f} s",
            )
            self.write()
            yield None
            return
        print(f"[{time.monotonic() - self.started:5.0f} s] {name}", file=sys.stderr, flush=True)
        t = time.monotonic()
        try:
            yield entry
            entry.setdefault("status", "ok")
        except Exception as e:
            entry.update(
                status="error",
                error=f"{type(e).__name__}: {e}".splitlines()[0],
                traceback=traceback.format_exc().splitlines()[-8:],
            )
            print(f"  error: {entry['error']}", file=sys.stderr, flush=True)
        entry["seconds"] = round(time.monotonic() - t, 2)
        self.write()

    def write(self) -> None:
        self.doc["seconds"] = round(time.monotonic() - self.started, 2)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text(json.dumps(self.doc, indent=2) + "\n")


def environment(device: str) -> dict[str, Any]:
    """Versions that decide the figures, and the GPU's name and memory."""
    import torch

    versions = {}
    for name in ("torch", "transformers", "xgrammar", "pydantic", "tokenizers", "accelerate"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    env: dict[str, Any] = {"device": device, "versions": versions}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            capability=f"{props.major}.{props.minor}",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
            tf32_cudnn=torch.backends.cudnn.allow_tf32,
        )
    return env


def build(out: Path, family: str, size: str = "tiny") -> Path:
    """A random model through the user's command, ``llavaguard testing tiny-model``."""
    path = out / f"{family}-{size}"
    if not (path / "config.json").exists():
        cmd = [
            sys.executable,
            "-m",
            "llavaguard",
            "testing",
            "tiny-model",
            str(path),
            "--family",
            family,
            "--size",
            size,
        ]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return path


def load(model: Path, device: str, dtype: str) -> Any:
    from llavaguard.engines.transformers import TransformersEngine, TransformersOptions

    return TransformersEngine.load(str(model), TransformersOptions(device=device, dtype=dtype))


def release(engine: Any) -> None:
    engine.close()
    gc.collect()


def peak_memory(device: str, reset: bool = False) -> float | None:
    """Peak GPU memory allocated since the last reset, in GiB (None on a CPU)."""
    import torch

    if not device.startswith("cuda"):
        return None
    if reset:
        torch.cuda.reset_peak_memory_stats(device)
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 3)


def max_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def score_diffs(policy: Any, alone: list[Any], together: list[Any]) -> dict[str, float]:
    """Largest differences between two runs' Scores: P(Unsafe) and P(category | rating)."""
    dp, dc = [], []
    for a, b in zip(alone, together, strict=True):
        dp.append(abs(a.p_unsafe - b.p_unsafe))
        for rating in ("Safe", "Unsafe"):
            ca, cb = a.category_scores[rating], b.category_scores[rating]
            dc.append(max_diff([ca[k] for k in policy.labels], [cb[k] for k in policy.labels]))
    return {"max_abs_p_unsafe": max(dp), "max_abs_category_score": max(dc)}


def check_batching(model: Path, device: str, photos: list[str]) -> dict[str, Any]:
    """Every photo scored alone and all in one batch, at the engine and through the Guard."""
    from llavaguard import Guard, Policy
    from llavaguard.engines import VisionRequest
    from llavaguard.guard.scoring import continuations, scores_from_logprobs
    from llavaguard.inputs.images import load_image
    from llavaguard.policy import answer_prefix

    engine = load(model, device, "float32")
    forced = not engine.capabilities.batch_prefill  # a CPU dry run takes the GPU's path too
    engine.capabilities = replace(engine.capabilities, batch_prefill=True)
    try:
        policy = Policy.load()
        conts = continuations(policy)
        requests = [
            VisionRequest(text=policy.text, images=(load_image(p),), prefix=answer_prefix())
            for p in photos
        ]
        alone = [engine.score([r], conts)[0].logprobs for r in requests]
        together = [s.logprobs for s in engine.score(requests, conts)]
        triage = Guard(engine, mode="triage")
        singles = [triage.assess(p) for p in photos]
        batched = triage.assess(photos, batch_size=len(photos))
        answers = compare_answers(engine, policy, requests)
    finally:
        release(engine)
    engine_diffs = score_diffs(
        policy, *[[scores_from_logprobs(policy, lp) for lp in run] for run in (alone, together)]
    )
    records = {
        "max_abs_p_unsafe": max_diff([a.score for a in singles], [a.score for a in batched]),
        "rating_flips": sum(a.rating != b.rating for a, b in zip(singles, batched, strict=True)),
        "category_changes": sum(
            a.category != b.category for a, b in zip(singles, batched, strict=True)
        ),
    }
    worst = max(
        engine_diffs["max_abs_p_unsafe"],
        engine_diffs["max_abs_category_score"],
        records["max_abs_p_unsafe"],
    )
    return {
        "photos": len(photos),
        "batch_prefill_forced": forced,
        "max_abs_logprob": max(max_diff(a, b) for a, b in zip(alone, together, strict=True)),
        "engine": engine_diffs,
        "triage_records": records,
        "answers": answers,
        "tolerance": TOLERANCE,
        "passed": worst <= TOLERANCE,
    }


def compare_answers(engine: Any, policy: Any, requests: list[Any], tokens: int = 32) -> dict:
    """Constrained greedy answers in one left-padded batch against one at a time, each photo
    with its own forced rating and category (full mode's accelerator path: one batch, one
    grammar matcher per row). Reported, not judged: random weights leave near-ties that a
    last-digit difference can tip to another token."""
    from llavaguard.engines import GenerationConfig
    from llavaguard.policy import answer_prefix, parse_answer

    config = GenerationConfig(max_new_tokens=tokens, json_schema=policy.answer_schema())
    labels = policy.labels
    forced = [
        replace(r, prefix=answer_prefix(("Safe", "Unsafe")[i % 2], labels[i % len(labels)]))
        for i, r in enumerate(requests)
    ]
    alone = [engine.generate([r], config)[0] for r in forced]
    together = engine.generate(forced, config)
    pairs = list(zip(forced, alone, together, strict=True))
    return {
        "max_new_tokens": tokens,
        "identical": sum(a == b for _, a, b in pairs),
        "of": len(pairs),
        "valid_alone": sum(parse_answer(r.prefix + a, policy).valid for r, a, _ in pairs),
        "valid_batched": sum(parse_answer(r.prefix + b, policy).valid for r, _, b in pairs),
    }


def triage_scores(model: Path, device: str, dtype: str, photos: list[str]) -> list[Any]:
    from llavaguard import Guard

    engine = load(model, device, dtype)
    try:
        return Guard(engine, mode="triage").assess(photos, batch_size=1)
    finally:
        release(engine)


def check_bf16(model: Path, device: str, photos: list[str]) -> dict[str, Any]:
    """bfloat16 against float32 on the same weights (saved in bf16, so exactly the same)."""
    fp32 = triage_scores(model, device, "float32", photos)
    bf16 = triage_scores(model, device, "bfloat16", photos)
    pairs = list(zip(fp32, bf16, strict=True))
    diffs = [abs(a.score - b.score) for a, b in pairs]
    cats = [
        max(abs(a.category_scores[k] - b.category_scores[k]) for k in a.category_scores)
        for a, b in pairs
        if a.rating == b.rating
    ]
    return {
        "photos": len(photos),
        "max_abs_p_unsafe": max(diffs),
        "mean_abs_p_unsafe": sum(diffs) / len(diffs),
        "max_abs_category_score": max(cats) if cats else None,
        "rating_flips": sum(a.rating != b.rating for a, b in pairs),
        "category_changes": sum(a.category != b.category for a, b in pairs),
        "p_unsafe_fp32": [a.score for a in fp32],
        "p_unsafe_bf16": [b.score for b in bf16],
    }


def measure(guard: Any, photos: list[str], batch: int, images: int, check: Check) -> dict:
    """Images/s over ``images`` photos (cycled) after one untimed warm-up batch; stops early,
    saying so, when the budget runs out."""
    device = guard.engine.device
    inputs = [photos[i % len(photos)] for i in range(images)]
    list(guard.assess(inputs[:batch], batch_size=batch))  # kernels, grammar compile
    peak_memory(device, reset=True)
    tokens0, done, valid = guard.engine.generated_tokens, 0, 0
    t = time.perf_counter()
    for record in guard.assess_iter(inputs, batch_size=batch):
        done, valid = done + 1, valid + record.valid
        if done % batch == 0 and check.left() < 5:
            break
    seconds = time.perf_counter() - t
    tokens = guard.engine.generated_tokens - tokens0
    return {
        "batch": batch,
        "images": done,
        "cut_short": done < images,
        "seconds": round(seconds, 3),
        "images_per_s": round(done / seconds, 3),
        "generated_tokens_per_image": round(tokens / done, 1),
        "valid": valid,
        "peak_gpu_memory_gib": peak_memory(device),
    }


def throughput(model: Path, args: argparse.Namespace, photos: list[str], check: Check) -> None:
    """Triage, then full mode, in bfloat16 at each batch size; one stage per run."""
    from llavaguard import Guard, GuardSpec
    from llavaguard.engines import GenerationConfig

    engine = None
    with check.stage("load-bf16", need_s=20) as entry:
        if entry is not None:
            engine = load(model, args.device, "bfloat16")
            entry["attention"] = engine.model.config.get_text_config()._attn_implementation
    if engine is None:
        return
    generation = GenerationConfig(max_new_tokens=args.tokens)
    for mode in ("triage", "full"):
        guard = Guard.from_spec(
            GuardSpec(model=str(model), mode=mode, generation=generation), engine
        )
        for batch in args.batches:
            images = max(args.min_images, args.repeats * batch)
            need = 10 if mode == "triage" else 30
            with check.stage(f"{mode}-batch{batch}", need_s=need) as entry:
                if entry is not None:
                    entry.update(
                        mode=mode,
                        max_new_tokens=args.tokens,
                        **measure(guard, photos, batch, images, check),
                    )
    release(engine)


def default_out(device: str) -> Path:
    import torch

    if device.startswith("cuda"):
        name = torch.cuda.get_device_name(device).split()[-1].lower()
    else:
        name = f"{device}-dry-run"
    base = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "bench" / ".cache"
    return base / f"gpu-{name}.json"


def parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny models throughout, batches 1 and 4, 16 tokens: a CPU dry run",
    )
    ap.add_argument("--budget-s", type=float, default=420, help="wall time for all stages")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--repeats", type=int, default=2, help="timed images = repeats x batch")
    ap.add_argument("--min-images", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128, help="max_new_tokens in full mode")
    ap.add_argument("--work", type=Path, default=Path("/tmp/llavaguard-gpu-check"))
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.batches, args.min_images, args.tokens = [1, 4], 4, 16
    return args


def main() -> None:
    args = parse()
    check = Check(args.out or default_out(args.device), args.budget_s)
    print(f"writing {check.out}", file=sys.stderr)
    photos = photo_paths(len(PHOTOS))
    with check.stage("environment", need_s=0) as entry:
        entry.update(environment(args.device))  # type: ignore[union-attr]
    check.doc["photos"] = [Path(p).name for p in photos]
    for family in FAMILIES:
        with check.stage(f"batching-{family}", need_s=20) as entry:
            if entry is not None:
                entry.update(check_batching(build(args.work, family), args.device, photos))
    size = "tiny" if args.quick else "0.5b"
    check.doc["architecture"] = f"llava-onevision {size} (random weights)"
    arch = None
    with check.stage(f"build-{size}", need_s=60) as entry:
        if entry is not None:
            arch = build(args.work, "llava-onevision", size)
    if arch is not None:
        with check.stage("bf16-vs-fp32", need_s=40) as entry:
            if entry is not None:
                entry.update(check_bf16(arch, args.device, photos))
        throughput(arch, args, photos, check)
    batching = [s for n, s in check.doc["stages"].items() if n.startswith("batching-")]
    check.doc["batching_passed"] = all(s.get("passed") for s in batching)
    peaks = [s["peak_gpu_memory_gib"] for s in check.doc["stages"].values()
             if s.get("peak_gpu_memory_gib") is not None]  # fmt: skip
    check.doc["peak_gpu_memory_gib"] = max(peaks, default=None)
    check.write()
    print(f"wrote {check.out}", file=sys.stderr)
    if args.device.startswith("cuda"):
        print(f"commit it as bench/results/{check.out.name}", file=sys.stderr)


if __name__ == "__main__":
    main()
