"""The whole loop, offline, on a CPU: synthetic labelled images -> import -> training set ->
fine-tuning a small model -> evaluation -> annotation of a new folder -> one report.

It is both the newcomer's first run (``llavaguard demo``) and the proof that the pipeline
learns (the synthetic visual-policy benchmark: ``bench/bench_synthetic.py``), with the
thresholds the report checks: balanced accuracy under the default policy, PER (an image's own
category declared non-violating must turn its rating to Safe) and category accuracy, all on
held-out images.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

THRESHOLDS = {"balanced_accuracy": 0.9, "per": 0.9, "category_accuracy": 0.9}


class LoopConfig(BaseModel):
    """One run of the loop; the scales below are the presets people run."""

    model_config = ConfigDict(extra="forbid")

    output: Path = Path("llavaguard-demo")
    per_category: int = Field(30, ge=1, description="Unsafe images per category O1-O9.")
    safe: int | None = Field(None, ge=1, description="Safe images (default: as many as Unsafe).")
    size: Literal["tiny", "small"] = "small"
    epochs: float = Field(3.0, gt=0)
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(8, ge=1)
    eval_samples: int = Field(64, ge=0, description="Scored at each evaluation during training.")
    annotate_images: int = Field(24, ge=0, description="New images annotated at the end.")
    compact_policy: bool = Field(
        False, description="Train and judge under the benchmark's compact taxonomy."
    )
    seed: int = 0


SCALES: dict[str, dict[str, Any]] = {
    # the test suite's version: fewer images, under the compact taxonomy (a 570-token prompt);
    # 16 samples scored at each evaluation during training (they only inform the log: the
    # thresholds are checked by the evaluation stage, on every held-out sample)
    "light": {
        "per_category": 12,
        "epochs": 3.0,
        "eval_samples": 16,
        "annotate_images": 6,
        "compact_policy": True,
    },
    # what `llavaguard demo` runs by default: the light loop (the same training, which the
    # test suite checks against the thresholds), a larger folder annotated
    "demo": {
        "per_category": 12,
        "epochs": 3.0,
        "eval_samples": 16,
        "annotate_images": 12,
        "compact_policy": True,
    },
    # the benchmark as documented: the LlavaGuard v1.2 policy itself (1,300 tokens)
    "full": {"per_category": 30, "epochs": 4.0, "eval_samples": 48, "annotate_images": 24},
}


def headline(report: dict[str, Any]) -> dict[str, float | None]:
    """The three benchmark figures from an evaluation report (unparsable answers excluded)."""
    return {
        "balanced_accuracy": report["default_policy"]["rating"]["excluded"]["balanced_accuracy"],
        "per": report["overall"]["per"]["excluded"]["per"],
        "category_accuracy": report["overall"]["category"]["excluded"]["exact"],
    }


def run_loop(cfg: LoopConfig, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every stage into ``cfg.output`` and write report.json and report.md there."""
    from llavaguard.annotate.report import write_report
    from llavaguard.annotate.run import annotate
    from llavaguard.dataset.build import build_dataset
    from llavaguard.dataset.labels import import_labels
    from llavaguard.engines import GenerationConfig
    from llavaguard.evaluate.run import EvalConfig, evaluate
    from llavaguard.guard.spec import GuardSpec
    from llavaguard.testing import build_tiny_model
    from llavaguard.testing.synthetic import COMPACT_POLICY, make_benchmark
    from llavaguard.train import TrainConfig, train

    out = cfg.output
    out.mkdir(parents=True, exist_ok=True)
    policy = str(COMPACT_POLICY) if cfg.compact_policy else None
    timings: dict[str, float] = {}

    def stage(name: str) -> Callable[[], None]:
        start = time.perf_counter()
        say(f"[{name}] ...")

        def done() -> None:
            timings[name] = round(time.perf_counter() - start, 1)

        return done

    done = stage("synthetic images")
    annotations = make_benchmark(out / "synthetic", per_category=cfg.per_category,
                                 safe=cfg.safe, seed=cfg.seed)  # fmt: skip
    done()
    done = stage("import labels")
    labels = out / "labels.jsonl"
    imported = import_labels(str(annotations), str(labels), policy=policy)
    done()
    done = stage("build dataset")
    dataset = out / "dataset"
    built = build_dataset(str(labels), str(dataset), seed=cfg.seed, policy=policy)
    done()
    done = stage("base model")
    base = build_tiny_model(out / "base", "llava-onevision", size=cfg.size, seed=cfg.seed)
    done()
    done = stage("train")
    # A random base model has no vision to keep: everything trains, at a small model's rate.
    trained = train(TrainConfig(
        model=str(base), data=dataset, output=out / "model", method="full",
        epochs=cfg.epochs, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
        effective_batch_size=cfg.batch_size, train_vision=True, train_projector=True,
        eval_samples=cfg.eval_samples, merge=True, seed=cfg.seed, dtype="float32",
    ))  # fmt: skip
    done()
    model = trained["merged"]
    done = stage("evaluate")
    # evaluation judges each sample under its own policy; annotation under the run's
    judge = GuardSpec(model=model, engine_options={"dtype": "float32"}, mode="full",
                      policy=policy, generation=GenerationConfig(max_new_tokens=64))  # fmt: skip
    report = evaluate(EvalConfig(labels=dataset / "test.labels.jsonl", guard=judge,
                                 output=out / "evaluation", bootstrap=200,
                                 seed=cfg.seed))  # fmt: skip
    done()
    annotated = None
    if cfg.annotate_images:
        done = stage("annotate a new folder")
        inbox = out / "inbox"
        make_benchmark(inbox, per_category=max(1, cfg.annotate_images // 18),
                       safe=max(1, cfg.annotate_images // 2), discard=0,
                       seed=cfg.seed + 1)  # fmt: skip
        summary = annotate(inputs=[str(inbox / "images")], output=out / "annotations",
                           guard=judge, overwrite=True)  # fmt: skip
        report_md = write_report(out / "annotations")
        annotated = {"rows": summary.rows, "failed": summary.failed,
                     "folder": str(out / "annotations"), "report": str(report_md)}  # fmt: skip
        done()
    figures = headline(report)
    checks = {k: {"value": figures[k], "threshold": t,
                  "passed": figures[k] is not None and figures[k] >= t}
              for k, t in THRESHOLDS.items()}  # fmt: skip
    result = {
        "config": json.loads(cfg.model_dump_json()),
        "passed": all(c["passed"] for c in checks.values()),
        "checks": checks,
        "held_out": {
            "samples": report["overall"]["n"],
            "images": built["splits"]["test"]["images"],
        },
        "imported": imported,
        "dataset": built["splits"],
        "training": {
            "steps": trained["steps"],
            "train_loss": trained["train_loss"],
            "final_eval": trained["final_eval"],
        },
        "rating_accuracy_by_augmentation": {
            "default policy": report["default_policy"]["rating"]["excluded"]["accuracy"],
            **{
                aug: sl["rating"]["excluded"]["accuracy"]
                for aug, sl in report["by_augmentation"].items()
            },
        },
        "annotated": annotated,
        "timings_s": timings,
        "paths": {
            "dataset": str(dataset),
            "model": model,
            "evaluation": str(out / "evaluation" / "report.md"),
            "annotations": annotated["report"] if annotated else None,
        },
    }
    (out / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "report.md").write_text(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        "# llavaguard loop: synthetic visual-policy benchmark",
        "",
        f"**{'PASSED' if result['passed'] else 'FAILED'}**: a {cfg['size']} model trained from "
        f"random weights on {cfg['per_category']} Unsafe images per category, judged on "
        f"{result['held_out']['images']} held-out images ({result['held_out']['samples']} "
        "samples with their policy variants), under the "
        f"{'compact' if cfg['compact_policy'] else 'LlavaGuard v1.2'} policy.",
        "",
        "| figure (held-out) | value | threshold | passed |",
        "|---|---|---|---|",
    ]
    for k, c in result["checks"].items():
        v = "n/a" if c["value"] is None else f"{c['value']:.3f}"
        lines.append(f"| {k} | {v} | {c['threshold']} | {'yes' if c['passed'] else 'no'} |")
    lines += [
        "",
        "Rating accuracy on the held-out samples by policy augmentation (v2: own category "
        "allowed, answer Safe; v3: other categories allowed, answer unchanged):",
        "",
        "| augmentation | rating accuracy |",
        "|---|---|",
    ]
    for aug, acc in result["rating_accuracy_by_augmentation"].items():
        lines.append(f"| {aug} | {'n/a' if acc is None else f'{acc:.3f}'} |")
    lines += ["", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in result["timings_s"].items()]
    lines += ["", "Files:", ""]
    lines += [f"- {k}: `{v}`" for k, v in result["paths"].items() if v]
    return "\n".join(lines) + "\n"
