"""The synthetic visual-policy benchmark: the proof that import -> build -> train -> evaluate
learns a policy-following safeguard, with no download, on a CPU.

A small model (``llavaguard testing tiny-model --size small``: random weights) is fine-tuned on
synthetic images whose categories are visual motifs, under the v1.2 augmentation recipe, then
judged on held-out images: balanced accuracy under the default policy, PER (each image's own
category declared non-violating must turn the rating to Safe) and category accuracy, each
>= 0.9 to pass.

    .venv/bin/python bench/bench_synthetic.py                 # the full scale (~45 min, 2 cores)
    .venv/bin/python bench/bench_synthetic.py --scale light   # the test suite's version (~6 min)

Writes bench/results/synthetic-<scale>.json (and the run's own report.md in --work).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    from llavaguard.demo import SCALES, LoopConfig, run_loop

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="full", choices=sorted(SCALES))
    ap.add_argument("--work", type=Path, default=Path("/tmp/llavaguard-bench-synthetic"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    result = run_loop(LoopConfig(output=args.work / args.scale, seed=args.seed,
                                 **SCALES[args.scale]))  # fmt: skip
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                         "python": sys.version.split()[0]}  # fmt: skip
    result["command"] = f"python bench/bench_synthetic.py --scale {args.scale}"
    out = ROOT / "bench" / "results" / f"synthetic-{args.scale}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["checks"], indent=2))
    print(f"wrote {out} and {args.work / args.scale / 'report.md'}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
