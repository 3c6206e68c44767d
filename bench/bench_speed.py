"""Speed of the model-card recipe against llavaguard's full and triage modes, side by side.

Same model, same images, one run. Each configuration runs in its own process so its peak
memory is its own. Random weights make answer lengths arbitrary, so generation length is
fixed: the recipe generates exactly --tokens new tokens (min = max), and full mode's
rationale is held open to the same count (GenerationConfig.min_new_tokens) and closed within
the last few tokens, so both decode the same number of tokens; the counts are reported.

    .venv/bin/python bench/bench_speed.py --size 0.5b --images 3      # real architecture
    .venv/bin/python bench/bench_speed.py --size tiny --images 6       # a minute

Writes bench/results/speed-<size>.json.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

from common import run_record

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
PHOTOS = ["coffee.png", "chelsea.png", "astronaut.png", "motorcycle_left.png", "rocket.jpg"]
ONE_TILE = 384 * 384


def configs(tokens: int) -> dict[str, dict]:
    recipe = dict(
        temperature=0.2, top_p=0.95, top_k=50, num_beams=2,
        max_new_tokens=tokens, min_new_tokens=tokens,
    )  # fmt: skip
    fixed = dict(max_new_tokens=tokens, min_new_tokens=tokens)
    return {
        # (a) the model card: sampling with beams, no constraints, no scores, one image at a time
        "recipe-fp32": dict(dtype="float32", generation=recipe, constrained=False, scores=False),
        "recipe-bf16": dict(dtype="bfloat16", generation=recipe, constrained=False, scores=False),
        # (b) full mode: greedy, constrained, scores, rationale of the same length
        "full-bf16": dict(dtype="bfloat16", generation=fixed),
        "full-fp32": dict(dtype="float32", generation=fixed),
        # (c) triage: scores only
        "triage-bf16": dict(dtype="bfloat16", mode="triage"),
        "triage-fp32": dict(dtype="float32", mode="triage"),
        # the image token budget: one 384-px tile's worth of pixels
        "full-bf16-1tile": dict(dtype="bfloat16", generation=fixed, image_max_pixels=ONE_TILE),
        "triage-bf16-1tile": dict(dtype="bfloat16", mode="triage", image_max_pixels=ONE_TILE),
    }


def worker(spec: dict) -> dict:
    """Run one configuration over the images; report seconds per image and peak memory."""
    import torch

    from llavaguard import Guard, GuardSpec
    from llavaguard.engines import GenerationConfig

    cfg = dict(spec["config"])
    generation = GenerationConfig(**cfg.pop("generation", {}))
    started = time.perf_counter()
    options = {"device": "cpu", "dtype": cfg.pop("dtype")}
    guard = Guard.from_spec(GuardSpec(model=spec["model"], engine_options=options,
                                      generation=generation, **cfg))  # fmt: skip
    load_s = time.perf_counter() - started
    images = spec["images"]
    engine = guard.engine
    if guard.constrained:  # import xgrammar and compile the grammar outside the timings
        engine._grammars().processor(guard.policy.answer_schema(), [""], 16)
    seconds, records, tokens = [], [], []
    for path in images:
        before = engine.generated_tokens
        t = time.perf_counter()
        a = guard.assess(path)
        seconds.append(time.perf_counter() - t)
        tokens.append(engine.generated_tokens - before)
        records.append({"image": Path(path).name, "rating": a.rating, "score": a.score,
                        "category": a.category, "valid": a.valid})  # fmt: skip
    return {
        "seconds_per_image": statistics.mean(seconds),
        "seconds": seconds,
        "generated_tokens": tokens,
        "load_seconds": load_s,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "threads": torch.get_num_threads(),
        "records": records,
    }


def model_dir(size: str) -> Path:
    from llavaguard.testing import build_tiny_model

    path = CACHE / f"llava-onevision-{size}"
    if not (path / "config.json").exists():
        build_tiny_model(path, "llava-onevision", size=size)
    return path


def photo_paths(n: int) -> list[str]:
    """Real photographs (scikit-image's), 451x300 to 741x500: a realistic size for a VLM."""
    out = CACHE / "photos"
    out.mkdir(parents=True, exist_ok=True)
    data = resources.files("skimage") / "data"
    paths = []
    for name in PHOTOS[:n]:
        target = out / (Path(name).stem + ".jpg")
        if not target.exists():
            from PIL import Image

            with resources.as_file(data / name) as p, Image.open(p) as im:
                im.convert("RGB").save(target, quality=92)
        paths.append(str(target))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "0.5b"], default="tiny")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--tokens", type=int, default=200, help="new tokens for recipe and full")
    ap.add_argument("--only", nargs="*", help="run only these configurations")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    model = str(model_dir(args.size))
    images = photo_paths(args.images)
    results = {}
    for name, cfg in configs(args.tokens).items():
        if args.only and name not in args.only:
            continue
        spec = json.dumps({"model": model, "images": images, "config": cfg})
        print(f"running {name} ...", file=sys.stderr, flush=True)
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", spec], capture_output=True, text=True
        )
        if proc.returncode != 0:
            results[name] = {"error": proc.stderr.strip().splitlines()[-1:]}
            continue
        results[name] = {"config": cfg, **json.loads(proc.stdout.strip().splitlines()[-1])}
        print(f"  {results[name]['seconds_per_image']:.2f} s/image", file=sys.stderr)
    base = results.get("recipe-fp32", {}).get("seconds_per_image")
    base16 = results.get("recipe-bf16", {}).get("seconds_per_image")
    ratios = {}
    for name, r in results.items():
        if "seconds_per_image" in r and not name.startswith("recipe"):
            if base:
                ratios[f"recipe-fp32 / {name}"] = base / r["seconds_per_image"]
            if base16:
                ratios[f"recipe-bf16 / {name}"] = base16 / r["seconds_per_image"]
    dtype = {}
    if "triage-fp32" in results and "triage-bf16" in results:
        a = results["triage-fp32"]["records"]
        b = results["triage-bf16"]["records"]
        diffs = [abs(x["score"] - y["score"]) for x, y in zip(a, b, strict=True)]
        dtype = {
            "max_abs_score_diff": max(diffs),
            "mean_abs_score_diff": statistics.mean(diffs),
            "rating_flips": sum(x["rating"] != y["rating"] for x, y in zip(a, b, strict=True)),
            "category_changes": sum(
                x["category"] != y["category"] for x, y in zip(a, b, strict=True)
            ),
            "images": len(a),
        }
    doc = {
        **run_record(),
        "model": f"llava-onevision {args.size} (random weights)",
        "images": [Path(p).name for p in images],
        "tokens": args.tokens,
        "results": results,
        "speedups": ratios,
        "bf16_vs_fp32_triage": dtype,
    }
    out = args.out or ROOT / "bench" / "results" / f"speed-{args.size}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps({"speedups": ratios, "bf16_vs_fp32_triage": dtype}, indent=2))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
