"""Annotation on Ray against the local backend, over WebDataset shards, at 1k and 20k images:
the driver's peak memory (it must not grow with the run), throughput with one engine actor
and with two, and the local backend's figures beside them, all in one run on one machine.

A two-node cluster is started on loopback (``llavaguard.testing.ray``), one CPU per node, so
two actors get one each. Each run is the real ``llavaguard annotate run`` command in its own
process; the driver's RSS is sampled every 0.1 s (the process alone: the actors and the
cluster live elsewhere). Images are distinct small JPEGs (the dedup cache never answers).

    .venv/bin/python bench/bench_annotate.py --backend ray                 # ~35 min here
    .venv/bin/python bench/bench_annotate.py --backend ray --sizes 1000    # ~4 min

Writes bench/results/annotate-ray-tiny.json. (Called by bench_annotate.py with --backend ray.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_annotate import make_images
from bench_speed import CACHE, model_dir
from common import run_record

ROOT = Path(__file__).resolve().parents[1]


def shards(n: int, per_shard: int) -> Path:
    """The first n bench images as tar shards of ``per_shard`` (made once, cached)."""
    from llavaguard.testing import write_shards

    folder = CACHE / f"ray-shards-{n}-{per_shard}"
    if not (folder / "done").exists():
        pool = make_images(CACHE / "annotate-images", n)
        write_shards(folder, sorted(pool.glob("*.jpg"))[:n], per_shard)
        (folder / "done").touch()
    return folder


def sample_rss(proc: subprocess.Popen) -> float:
    """Peak RSS of ``proc`` (MB), sampled until it exits."""
    import psutil

    peak = 0
    p = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            peak = max(peak, p.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.1)
    return peak / 2**20


def run(folder: Path, out: Path, args: argparse.Namespace, backend: list[str], env) -> dict:
    cmd = [sys.executable, "-m", "llavaguard", "annotate", "run", str(folder), "-o", str(out),
           "--model", str(model_dir("tiny")), "--mode", "triage", "-b", str(args.batch_size),
           "-q", "--overwrite", *backend]  # fmt: skip
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = sample_rss(proc)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.wait() not in (0, 1):
        raise RuntimeError(err[-2000:])
    wall = time.perf_counter() - t
    last = json.loads((out / "_manifest.json").read_text())["runs"][-1]
    return {"images": last["rows"], "seconds": last["seconds"], "wall_seconds": round(wall, 2),
            "load_seconds": last["load_seconds"],
            "images_per_second": round(last["rows"] / last["seconds"], 2),
            "driver_peak_rss_mb": round(peak, 1)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 20000])
    ap.add_argument("--per-shard", type=int, default=100, help="images per tar (one unit)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    from llavaguard.testing.ray import start_cluster

    cluster = start_cluster(nodes=2, cpus=1)
    runs = []
    try:
        for n in args.sizes:
            folder = shards(n, args.per_shard)
            ray = ["--backend", "ray", "--ray-address", cluster.address, "--ray-actors"]
            configs = {"local": ["--backend", "local"], "ray-1": [*ray, "1"], "ray-2": [*ray, "2"]}
            for name, backend in configs.items():
                r = {"config": name, **run(folder, CACHE / f"ray-out-{name}", args, backend,
                                           cluster.env)}  # fmt: skip
                runs.append(r)
                print(f"{n} {name}: {r['images_per_second']} img/s, driver peak "
                      f"{r['driver_peak_rss_mb']} MB", flush=True)  # fmt: skip
    finally:
        cluster.stop()
    doc = {**run_record(), "model": "llava-onevision tiny (random weights)", "mode": "triage",
           "batch_size": args.batch_size, "per_shard": args.per_shard, "runs": runs,
           **ratios(runs, args.sizes)}  # fmt: skip
    out = args.out or ROOT / "bench" / "results" / "annotate-ray-tiny.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(ratios(runs, args.sizes), indent=2))
    print(out)


def ratios(runs: list[dict], sizes: list[int]) -> dict:
    """The figures the issue sets goals for, as ratios within this run."""
    by = {(r["images"], r["config"]): r for r in runs}
    lo, hi = min(sizes), max(sizes)
    got: dict = {}
    if (hi, "ray-2") in by and (lo, "ray-2") in by and hi != lo:
        got["driver_rss_growth"] = round(
            by[hi, "ray-2"]["driver_peak_rss_mb"] / by[lo, "ray-2"]["driver_peak_rss_mb"], 3
        )
    for n in sizes:
        if (n, "ray-1") in by and (n, "ray-2") in by:
            got[f"two_actors_vs_one_{n}"] = round(
                by[n, "ray-2"]["images_per_second"] / by[n, "ray-1"]["images_per_second"], 3
            )
    return got


if __name__ == "__main__":
    main()
