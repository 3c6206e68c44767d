"""The whole loop, offline, on a CPU: synthetic labelled images -> import -> training set ->
fine-tuning a small model -> evaluation -> annotation of a new folder -> one report.

It is both the newcomer's first run (``llavaguard demo``) and the proof that the pipeline
learns (the synthetic visual-policy benchmark: ``bench/bench_synthetic.py``), with the
thresholds the report checks: balanced accuracy under the default policy, PER (an image's own
category declared non-violating must turn its rating to Safe) and category accuracy, all on
held-out images. Each stage leaves a completion marker: ``llavaguard demo`` rerun with the same
output resumes after the last finished stage.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llavaguard.dataset.build import V12_RECIPE

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
    recipe: list[str] = Field(
        list(V12_RECIPE), description="Augmentations per image (dataset build's recipe)."
    )
    compact_policy: bool = Field(
        False, description="Train and judge under the benchmark's compact taxonomy."
    )
    seed: int = 0


# The light and demo scales teach the small model the own-category exception twice per Unsafe
# image (v1.2's recipe has it once, beside three v3): in the five minutes a newcomer waits, the
# v1.2 recipe left PER at 0.889 (3 epochs) and 0.833 (4 epochs) on the held-out images, this
# one reached 1.000 (`llavaguard demo --scale light`; docs/benchmarks.md). Full keeps v1.2's.
# The one-category forms (v6, v7) in place of one v3 and one v2 broke it: PER 0.5 (v7 0.0).
DEMO_RECIPE = ["v3", "v3", "v2", "v2"]

SCALES: dict[str, dict[str, Any]] = {
    # the test suite's version: fewer images, under the compact taxonomy (a 570-token prompt);
    # 8 samples scored at each evaluation during training (they only inform the log: the
    # thresholds are checked by the evaluation stage, on every held-out sample)
    "light": {
        "per_category": 12,
        "epochs": 4.0,
        "recipe": DEMO_RECIPE,
        "eval_samples": 8,
        "annotate_images": 6,
        "compact_policy": True,
    },
    # what `llavaguard demo` runs by default: the light loop (the same training, which the
    # test suite checks against the thresholds), a larger folder annotated
    "demo": {
        "per_category": 12,
        "epochs": 4.0,
        "recipe": DEMO_RECIPE,
        "eval_samples": 8,
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
    """Run every stage into ``cfg.output`` and write report.json and report.md there. Each
    stage leaves a completion marker (``pipeline.Stages``): a rerun with the same settings
    resumes after the last finished stage; other settings in the same folder are refused."""
    from llavaguard.pipeline import Stages

    stages = Stages(cfg.output, json.loads(cfg.model_dump_json(exclude={"output"})))
    made = _stages(cfg, stages, say)
    result = _result(cfg, made, stages.timings)
    (cfg.output / "report.json").write_text(json.dumps(result, indent=2) + "\n")
    (cfg.output / "report.md").write_text(markdown(result))
    return result


def _stages(cfg: LoopConfig, stages: Any, say: Callable[[str], None]) -> dict[str, Any]:
    """What each stage made: JSON-ready, as its marker keeps it for a rerun."""
    from llavaguard.dataset.build import build_dataset
    from llavaguard.dataset.labels import import_labels
    from llavaguard.testing import build_tiny_model
    from llavaguard.testing.synthetic import COMPACT_POLICY, make_benchmark

    out, seed = cfg.output, cfg.seed
    policy = str(COMPACT_POLICY) if cfg.compact_policy else None
    labels, dataset = out / "labels.jsonl", out / "dataset"

    def synthetic() -> str:
        return str(make_benchmark(out / "synthetic", per_category=cfg.per_category,
                                  safe=cfg.safe, seed=seed))  # fmt: skip

    def base() -> str:
        return str(build_tiny_model(out / "base", "llava-onevision", size=cfg.size, seed=seed))

    annotations = stages.run("synthetic images", synthetic, say)
    imported = stages.run(
        "import labels", lambda: import_labels(annotations, str(labels), policy=policy), say
    )
    built = stages.run(
        "build dataset",
        lambda: build_dataset(
            str(labels), str(dataset), recipe=cfg.recipe, seed=seed, policy=policy
        ),
        say,
    )
    base_model = stages.run("base model", base, say)
    trained = stages.run("train", lambda: _train(cfg, base_model), say)
    judge = _judge(trained["merged"], policy)
    report = stages.run("evaluate", lambda: _evaluate(cfg, judge, stages.resuming("evaluate")), say)
    annotated = None
    if cfg.annotate_images:
        name = "annotate a new folder"
        annotated = stages.run(name, lambda: _annotate(cfg, judge, stages.resuming(name)), say)
    return {"imported": imported, "built": built, "trained": trained, "report": report,
            "annotated": annotated}  # fmt: skip


def _train(cfg: LoopConfig, base: str) -> dict[str, Any]:
    """An interrupted training starts over: resuming a full fine-tune from its checkpoint
    restores no weights today (transformers reports every key missing), only the step count."""
    from llavaguard.train import TrainConfig, train

    # A random base model has no vision to keep: everything trains, at a small model's rate.
    return train(TrainConfig(
        model=base, data=cfg.output / "dataset", output=cfg.output / "model", method="full",
        epochs=cfg.epochs, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
        effective_batch_size=cfg.batch_size, train_vision=True, train_projector=True,
        eval_samples=cfg.eval_samples, merge=True, seed=cfg.seed, dtype="float32",
    ))  # fmt: skip


def _judge(model: str, policy: str | None) -> Any:
    """Evaluation judges each sample under its own policy; annotation under the run's."""
    from llavaguard.engines import GenerationConfig
    from llavaguard.guard.spec import GuardSpec

    return GuardSpec(model=str(model), engine_options={"dtype": "float32"}, mode="full",
                     policy=policy, generation=GenerationConfig(max_new_tokens=64))  # fmt: skip


def _evaluate(cfg: LoopConfig, judge: Any, resume: bool) -> dict[str, Any]:
    from llavaguard.evaluate.run import PREDICTIONS_FILE, EvalConfig, evaluate

    if not resume:  # predictions of another run's model must not be reused
        (cfg.output / "evaluation" / PREDICTIONS_FILE).unlink(missing_ok=True)
    return evaluate(EvalConfig(labels=cfg.output / "dataset" / "test.labels.jsonl", guard=judge,
                               output=cfg.output / "evaluation", bootstrap=200,
                               seed=cfg.seed))  # fmt: skip


def _annotate(cfg: LoopConfig, judge: Any, resume: bool) -> dict[str, Any]:
    from llavaguard.annotate import AnnotateConfig, ResultStore, annotate, write_report
    from llavaguard.testing.synthetic import make_benchmark

    inbox, folder = cfg.output / "inbox", cfg.output / "annotations"
    make_benchmark(inbox, per_category=max(1, cfg.annotate_images // 18),
                   safe=max(1, cfg.annotate_images // 2), discard=0,
                   seed=cfg.seed + 1)  # fmt: skip
    annotate(AnnotateConfig(inputs=[str(inbox / "images")], output=folder,
                            guard=judge, overwrite=not resume))  # fmt: skip
    store = ResultStore(folder)  # the rows of this run and of the interrupted one it resumed
    failed = sum(r["failed"] for r in (store.manifest() or {}).get("runs", []))
    return {"rows": store.rows(["id"]).num_rows, "failed": failed, "folder": str(folder),
            "report": str(write_report(folder))}  # fmt: skip


def _result(cfg: LoopConfig, made: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
    report, built, trained, annotated = (made[k] for k in ("report", "built", "trained",
                                                          "annotated"))  # fmt: skip
    figures = headline(report)
    checks = {k: {"value": figures[k], "threshold": t,
                  "passed": figures[k] is not None and figures[k] >= t}
              for k, t in THRESHOLDS.items()}  # fmt: skip
    by_aug = {aug: sl["rating"]["excluded"]["accuracy"]
              for aug, sl in report["by_augmentation"].items()}  # fmt: skip
    return {
        "config": json.loads(cfg.model_dump_json()),
        "passed": all(c["passed"] for c in checks.values()),
        "checks": checks,
        "held_out": {
            "samples": report["overall"]["n"],
            "images": built["splits"]["test"]["images"],
        },
        "imported": made["imported"],
        "dataset": built["splits"],
        "training": {k: trained[k] for k in ("steps", "train_loss", "final_eval")},
        "rating_accuracy_by_augmentation": {
            "default policy": report["default_policy"]["rating"]["excluded"]["accuracy"],
            **by_aug,
        },
        "annotated": annotated,
        "timings_s": timings,
        "paths": {
            "dataset": str(cfg.output / "dataset"),
            "model": trained["merged"],
            "evaluation": str(cfg.output / "evaluation" / "report.md"),
            "annotations": annotated["report"] if annotated else None,
        },
    }


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
