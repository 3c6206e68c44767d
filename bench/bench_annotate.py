"""Annotation throughput at 1k and 10k images, peak memory, and the pipeline's overhead over
pure engine time on the same images.

Each size runs `llavaguard annotate run` in its own process (so its peak RSS is its own) on a
folder of distinct small photos-like images (unique bytes: the dedup cache never answers).
The overhead runs time the same images in one process, after a warm-up, three times each,
alternating (medians): the whole pipeline (read, hash, decode ahead, cache, shards) against
`guard.assess` on images decoded beforehand, same batch size; overhead = pipeline/engine - 1.

    .venv/bin/python bench/bench_annotate.py                  # tiny model, triage, ~10 min
    .venv/bin/python bench/bench_annotate.py --sizes 1000     # quicker
    .venv/bin/python bench/bench_annotate.py --backend ray    # Ray: bench_annotate_ray.py

Writes bench/results/annotate-tiny.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import CACHE, model_dir
from common import run_record

ROOT = Path(__file__).resolve().parents[1]


def make_images(folder: Path, n: int, seed: int = 0) -> Path:
    """n distinct JPEGs, 96 to 256 px, of blocks and gradients (cached between runs)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    have = len(list(folder.glob("*.jpg")))
    rng = random.Random(seed + have)
    for i in range(have, n):
        w, h = rng.randint(96, 256), rng.randint(96, 256)
        im = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(im)
        for _ in range(6):
            x, y = rng.randrange(w), rng.randrange(h)
            draw.rectangle(
                [x, y, x + rng.randint(8, 64), y + rng.randint(8, 64)],
                fill=tuple(rng.randrange(256) for _ in range(3)),
            )
        im.save(folder / f"{i:06d}.jpg", quality=90)
    return folder


def run_cli(images: Path, out: Path, model: Path, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "llavaguard",
        "annotate",
        "run",
        str(images),
        "-o",
        str(out),
        "--model",
        str(model),
        "--mode",
        args.mode,
        "-b",
        str(args.batch_size),
        "-q",
        "--overwrite",
        "--max-new-tokens",
        str(args.tokens),
    ]
    timer = ["/usr/bin/time", "-f", "%M"] if os.path.exists("/usr/bin/time") else []
    t = time.perf_counter()
    proc = subprocess.run([*timer, *cmd], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode not in (0, 1):
        raise RuntimeError(proc.stderr[-2000:])
    manifest = json.loads((out / "_manifest.json").read_text())
    run = manifest["runs"][-1]
    peak_kb = int(proc.stderr.strip().splitlines()[-1]) if timer else 0
    return {
        "images": run["rows"],
        "seconds": run["seconds"],
        "load_seconds": run["load_seconds"],
        "wall_seconds": wall,
        "images_per_second": run["rows"] / run["seconds"],
        "peak_rss_mb": peak_kb / 1024,
    }


def overhead(images: Path, model: Path, args: argparse.Namespace, n: int) -> dict:
    """Pipeline time against engine time on the same n images, one process, warm; the
    median of ``--repeats`` alternating runs of each."""
    import shutil

    from llavaguard.annotate import AnnotateConfig, annotate
    from llavaguard.engines import GenerationConfig
    from llavaguard.guard.core import Guard
    from llavaguard.guard.spec import GuardSpec
    from llavaguard.inputs.images import load_image

    spec = GuardSpec(
        model=str(model), mode=args.mode, generation=GenerationConfig(max_new_tokens=args.tokens)
    )
    guard = Guard.from_spec(spec)
    files = sorted(images.glob("*.jpg"))[:n]
    subset = CACHE / f"overhead-{n}"
    if not subset.exists():
        subset.mkdir(parents=True)
        for f in files:
            shutil.copyfile(f, subset / f.name)
    decoded = [load_image(f) for f in files]
    guard.assess(decoded[: args.batch_size], batch_size=args.batch_size)  # warm-up
    engine_s, pipeline_s = [], []
    out = CACHE / "overhead-out"
    for _ in range(args.repeats):  # alternate, so drift on a shared machine hits both alike
        t = time.perf_counter()
        guard.assess(decoded, batch_size=args.batch_size)
        engine_s.append(time.perf_counter() - t)
        summary = annotate(
            AnnotateConfig(inputs=[str(subset)], output=out, guard=spec,
                           batch_size=args.batch_size, overwrite=True),
            guard=guard,
        )  # fmt: skip
        pipeline_s.append(summary.seconds)
    engine, pipeline = statistics.median(engine_s), statistics.median(pipeline_s)
    return {
        "images": n,
        "engine_seconds": engine_s,
        "pipeline_seconds": pipeline_s,
        "overhead": pipeline / engine - 1,
    }


def main() -> None:
    if "--backend" in sys.argv:  # the Ray benchmark has its own figures and options
        at = sys.argv.index("--backend")
        if sys.argv[at + 1 : at + 2] == ["ray"]:
            import bench_annotate_ray

            bench_annotate_ray.main(sys.argv[1:at] + sys.argv[at + 2 :])
            return
        del sys.argv[at : at + 2]
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    ap.add_argument("--mode", default="triage")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--overhead-images", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3, help="overhead runs (median)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    model = model_dir("tiny")
    pool = make_images(CACHE / "annotate-images", max(args.sizes))
    runs = []
    for n in args.sizes:
        folder = CACHE / f"annotate-{n}"
        if not folder.exists():
            folder.mkdir(parents=True)
            for f in sorted(pool.glob("*.jpg"))[:n]:
                os.link(f, folder / f.name)
        r = run_cli(folder, CACHE / f"annotate-out-{n}", model, args)
        runs.append(r)
        print(
            f"{n} images: {r['images_per_second']:.2f} img/s, {r['seconds']:.1f} s, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    ov = overhead(pool, model, args, args.overhead_images)
    print(f"overhead over engine time: {100 * ov['overhead']:.1f}%", flush=True)
    doc = {
        **run_record(),
        "model": "llava-onevision tiny (random weights)",
        "mode": args.mode,
        "batch_size": args.batch_size,
        "runs": runs,
        "overhead": ov,
        "peak_rss_mb_this_process": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    out = args.out or ROOT / "bench" / "results" / "annotate-tiny.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(out)


if __name__ == "__main__":
    main()
