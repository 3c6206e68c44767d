"""The synthetic visual-policy benchmark: the proof that import -> build -> train -> evaluate
learns a policy-following safeguard, with no download, on a CPU.

A small model (``llavaguard testing tiny-model --size small``: random weights) is fine-tuned on
synthetic images whose categories are visual motifs, under the v1.2 augmentation recipe, then
judged on held-out images: balanced accuracy under the default policy, PER (each image's own
category declared non-violating must turn the rating to Safe) and category accuracy, each
>= 0.9 to pass.

    .venv/bin/python bench/bench_synthetic.py                 # the full scale (~45 min, 2 cores)
    .venv/bin/python bench/bench_synthetic.py --scale light   # the test suite's version (~6 min)
    .venv/bin/python bench/bench_synthetic.py --recipe v3,v3,v6,v2,v7,v7,v8   # another recipe

Writes bench/results/synthetic-<scale>.json, or synthetic-<scale>-<recipe>.json for another
recipe (and the run's own report.md in --work).
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
    ap.add_argument("--recipe", help="augmentations per image, comma-separated (v8 of Safe "
                    "images, the others of Unsafe ones; default: the scale's)")  # fmt: skip
    args = ap.parse_args()
    scale = dict(SCALES[args.scale])
    name = args.scale
    if args.recipe:
        scale["recipe"] = args.recipe.split(",")
        name += "-" + "".join(scale["recipe"])
    result = run_loop(LoopConfig(output=args.work / name, seed=args.seed, **scale))
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                         "python": sys.version.split()[0]}  # fmt: skip
    result["command"] = "python " + " ".join(["bench/bench_synthetic.py", *sys.argv[1:]])
    out = ROOT / "bench" / "results" / f"synthetic-{name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["checks"], indent=2))
    print(f"wrote {out} and {args.work / name / 'report.md'}")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
