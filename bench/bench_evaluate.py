"""Scoring time and peak memory of `llavaguard evaluate run --predictions` on a large labelled
set: no model, only reading, joining, metrics (with 1,000 bootstrap resamples), reports and
plots, which is where a 100,000-row run spent 179 s before the metrics were vectorised.

The labelled set is generated (seeded): half Unsafe, a fifth of the Unsafe images as `_v2`
samples with their own category allowed and a fifth as `_v3_a` with another allowed, so PER and
the per-policy slices have work; the predictions are random, with categories in five
spellings (labels, old spellings, bare codes) so category resolution has work too. Both are
CSV. The run is `llavaguard evaluate run` in its own process (so its peak RSS is its own).

    .venv/bin/python bench/bench_evaluate.py                  # 100,000 rows, about 20 s
    .venv/bin/python bench/bench_evaluate.py --rows 10000

Writes bench/results/evaluate-<rows>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import run_record

ROOT = Path(__file__).resolve().parents[1]
CODES = [f"O{i}" for i in range(1, 10)]
SPELLINGS = ["O1: Hate, Humiliation, Harassment", "O2: Violence, Harm or Cruelty",
             "NA: None applying", "o3", "10: None applying"]  # fmt: skip


def make_set(folder: Path, n: int, seed: int = 0) -> tuple[Path, Path]:
    """labels.csv and predictions.csv of ``n`` rows each."""
    rng = random.Random(seed)
    labels, preds = folder / "labels.csv", folder / "predictions.csv"
    with labels.open("w", newline="") as f, preds.open("w", newline="") as g:
        lw, pw = csv.writer(f), csv.writer(g)
        lw.writerow(["id", "image", "rating", "category", "allow"])
        pw.writerow(["id", "rating", "category", "score"])
        for i in range(n):
            unsafe, code, kind = rng.random() < 0.5, rng.choice(CODES), rng.random()
            sample_id, allow = f"img{i:06d}", ""
            rating, category = ("Unsafe", code) if unsafe else ("Safe", "")
            if unsafe and kind < 0.2:
                sample_id, allow, rating = sample_id + "_v2", code, "Safe"
            elif unsafe and kind < 0.4:
                sample_id += "_v3_a"
                allow = rng.choice([c for c in CODES if c != code])
            lw.writerow([sample_id, f"images/{i}.jpg", rating, category, allow])
            score = rng.random()
            pw.writerow([sample_id, "Unsafe" if score > 0.5 else "Safe",
                         rng.choice(SPELLINGS), f"{score:.4f}"])  # fmt: skip
    return labels, preds


def run(labels: Path, preds: Path, out: Path, bootstrap: int) -> dict:
    cmd = [sys.executable, "-m", "llavaguard", "evaluate", "run", str(labels), "--predictions",
           str(preds), "-o", str(out), "--bootstrap", str(bootstrap), "-q"]  # fmt: skip
    timer = ["/usr/bin/time", "-f", "%M"] if os.path.exists("/usr/bin/time") else []
    t = time.perf_counter()
    proc = subprocess.run([*timer, *cmd], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"evaluate failed ({proc.returncode}): {proc.stderr[-2000:]}")
    peak = int(proc.stderr.strip().splitlines()[-1]) / 1024 if timer else None
    report = json.loads((out / "report.json").read_text())
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": None if peak is None else round(peak, 1),
        "scored": report["overall"]["n"] - report["overall"]["missing"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--bootstrap", type=int, default=1000, help="as the command's default")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        labels, preds = make_set(Path(tmp), args.rows)
        result = run(labels, preds, Path(tmp) / "report", args.bootstrap)
    print(f"{args.rows} rows: {result['seconds']:.1f} s, peak RSS {result['peak_rss_mb']} MB")
    doc = {
        **run_record(),
        "rows": args.rows,
        "bootstrap": args.bootstrap,
        "load_average_before": os.getloadavg()[0],
        **result,
    }
    out = args.out or ROOT / "bench" / "results" / f"evaluate-{args.rows}.json"
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(out)


if __name__ == "__main__":
    main()
