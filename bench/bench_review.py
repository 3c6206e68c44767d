"""The review page over a results folder of 1,000,000 rows (made here, no model): how long
the first page takes to open, through the real server, and a filtered page deep in the run.

Each timing starts a fresh `llavaguard review` process on the folder and measures, from the
moment it answers, the first `/api/rows` (opening the shards and sorting a million scores),
then a filtered, uncertainty-ordered page at offset 300,000; medians of three starts. The goal
is a first page in under one second.

    .venv/bin/python bench/bench_review.py          # ~1 min (the folder is made once)

Writes bench/results/review-1m.json.
"""

from __future__ import annotations

import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import CACHE
from common import run_record

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = [
    "NA: None applying",
    "O1: Hate, Humiliation, Harassment",
    "O2: Violence, Harm, or Cruelty",
]


def make_results(folder: Path, n: int, per_shard: int = 20_000) -> Path:
    """n rows as annotate writes them (random scores), in shards of ``per_shard``."""
    import pyarrow as pa

    from llavaguard.annotate.store import ResultStore
    from llavaguard.policy import Policy

    if (folder / "_manifest.json").exists():
        return folder
    rng = random.Random(0)
    store = ResultStore(folder, shard_size=per_shard)
    store.open({"model": "bench", "policy_id": Policy.load().id}, {}, False)
    for start in range(0, n, per_shard):
        scores = [rng.random() for _ in range(per_shard)]
        ids = [f"img-{i:08d}" for i in range(start, start + per_shard)]
        store.write_shard(pa.table({
            "id": ids, "key": [f"/data/{i}.jpg" for i in ids],
            "rating": ["Unsafe" if s >= 0.5 else "Safe" for s in scores],
            "category": [CATEGORIES[1 + (i % 2)] if s >= 0.5 else CATEGORIES[0]
                         for i, s in enumerate(scores)],
            "score": scores, "valid": [True] * per_shard,
        }).to_pylist())  # fmt: skip
    store.close()
    return folder


def one_start(folder: Path, port: int) -> dict:
    proc = subprocess.Popen([sys.executable, "-m", "llavaguard", "review", str(folder), "--port",
                             str(port)], stderr=subprocess.DEVNULL)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{base}/", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        t = time.perf_counter()
        first = httpx.get(f"{base}/api/rows", params={"limit": 60}, timeout=60).json()
        first_s = time.perf_counter() - t
        t = time.perf_counter()
        deep = httpx.get(f"{base}/api/rows", params={"limit": 60, "offset": 300_000,
                         "rating": "Unsafe", "sort": "uncertainty"}, timeout=60).json()  # fmt: skip
        return {"first_page_s": first_s, "deep_page_s": time.perf_counter() - t,
                "total": first["total"], "deep_rows": len(deep["rows"])}  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> None:
    n = 1_000_000
    folder = make_results(CACHE / "review-1m", n)
    from llavaguard.testing.ray import free_port

    runs = [one_start(folder, free_port()) for _ in range(3)]
    first = statistics.median(r["first_page_s"] for r in runs)
    deep = statistics.median(r["deep_page_s"] for r in runs)
    doc = {**run_record(), "rows": n, "runs": runs, "first_page_median_s": round(first, 3),
           "deep_page_median_s": round(deep, 3), "goal_first_page_s": 1.0}  # fmt: skip
    out = ROOT / "bench" / "results" / "review-1m.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"first page {first * 1000:.0f} ms, filtered page at 300k {deep * 1000:.0f} ms -> {out}")


if __name__ == "__main__":
    main()
