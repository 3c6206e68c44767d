"""Scores people can act on, on the synthetic benchmark's trained model: calibration (ECE and
Brier before and after, on held-out images) and --multi-label (ROC AUC of P(violates c) for
every category on held-out images).

The model is a synthetic benchmark run's (a small random model trained on the CPU): the light
one (``llavaguard demo --scale light``, trained first when --demo holds none) or the full one
(``bench/bench_synthetic.py --scale full``, under the LlavaGuard v1.2 policy). Each is judged
under the policy it was trained on, as its run's report.json says. The calibration is fitted on
new synthetic images from another seed (none of them seen in training), and judged on the
benchmark's held-out images, as tests/test_loop.py does.

    .venv/bin/python bench/bench_scores.py --demo /tmp/llavaguard-demo-light
    .venv/bin/python bench/bench_scores.py --demo /tmp/llavaguard-bench-synthetic/full --name full

Writes bench/results/scores-<name>.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import run_record

ROOT = Path(__file__).resolve().parents[1]


def run_policy(demo: Path) -> str | None:
    """The policy the run trained and judged under: the compact taxonomy or v1.2 (None)."""
    from llavaguard.testing.synthetic import COMPACT_POLICY

    config = json.loads((demo / "report.json").read_text())["config"]
    return str(COMPACT_POLICY) if config["compact_policy"] else None


def calibration(demo: Path, work: Path, model: Path) -> dict:
    from llavaguard.dataset.labels import import_labels
    from llavaguard.evaluate import EvalConfig, evaluate
    from llavaguard.evaluate.calibrate import CalibrateConfig, calibrate
    from llavaguard.guard.spec import GuardSpec
    from llavaguard.testing.synthetic import make_benchmark

    annotations = make_benchmark(work / "fresh", per_category=4, safe=36, discard=0, seed=7)
    labels = work / "fresh.labels.jsonl"
    import_labels(str(annotations), str(labels), policy=run_policy(demo))
    spec = GuardSpec(model=str(model), engine_options={"dtype": "float32"})
    cal = calibrate(CalibrateConfig(labels=labels, guard=spec, output=work / "cal.json"))
    report = evaluate(EvalConfig(
        labels=demo / "dataset" / "test.labels.jsonl", bootstrap=0, plots=False,
        predictions=demo / "evaluation" / "predictions.jsonl", calibration=work / "cal.json",
        output=work / "report"))  # fmt: skip
    held = report["calibration"]
    return {"method": cal.method, "temperature": cal.temperature, "fitted": cal.fitted,
            "held_out": {k: held[k] for k in ("samples", "before", "after")}}  # fmt: skip


def multi_label(demo: Path, model: Path) -> dict:
    from sklearn.metrics import roc_auc_score

    from llavaguard import Guard
    from llavaguard.inputs.labels import read_labels

    held = [s for s in read_labels(demo / "dataset" / "test.labels.jsonl")
            if s.augmentation is None and s.variant is None]  # fmt: skip
    guard = Guard.from_pretrained(str(model), dtype="float32", mode="triage",
                                  policy=run_policy(demo), multi_label=True)  # fmt: skip
    start = time.perf_counter()
    rows = guard.assess([s.image for s in held])
    seconds = time.perf_counter() - start
    truth = [(s.category or "").split(":")[0] if s.rating == "Unsafe" else "" for s in held]
    auc = {code: roc_auc_score([t == code for t in truth], [r.violations[code] for r in rows])
           for code in rows[0].violations}  # fmt: skip
    return {"images": len(held), "roc_auc": auc, "min_roc_auc": min(auc.values()),
            "seconds_per_image": seconds / len(held)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, default=Path("/tmp/llavaguard-demo-light"))
    ap.add_argument("--name", default="light", help="bench/results/scores-<name>.json")
    args = ap.parse_args()
    if not (args.demo / "report.json").is_file():
        subprocess.run([sys.executable, "-m", "llavaguard", "demo", "--scale", "light", "-o",
                        str(args.demo)], check=True)  # fmt: skip
    model = args.demo / "model" / "merged"
    work = args.demo / "scores-bench"
    result = {**run_record(), "demo": json.loads((args.demo / "report.json").read_text())["checks"],
              "calibration": calibration(args.demo, work, model),
              "multi_label": multi_label(args.demo, model)}  # fmt: skip
    out = ROOT / "bench" / "results" / f"scores-{args.name}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    c, m = result["calibration"]["held_out"], result["multi_label"]
    print(
        f"held-out ECE {c['before']['ece']:.4f} -> {c['after']['ece']:.4f}, Brier "
        f"{c['before']['brier']:.4f} -> {c['after']['brier']:.4f} ({c['samples']} samples)"
    )
    print(
        f"multi-label ROC AUC min {m['min_roc_auc']:.3f} over {m['images']} images: "
        + ", ".join(f"{k} {v:.3f}" for k, v in m["roc_auc"].items())
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
