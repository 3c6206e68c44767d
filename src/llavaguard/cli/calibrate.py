"""``llavaguard calibrate``: fit a calibration of P(Unsafe) on a labelled set."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from llavaguard.cli.common import err_console
from llavaguard.cli.options import MODEL, POLICY, batch_size_option, guard_options, quiet_option
from llavaguard.guard.spec import GuardSpec

if TYPE_CHECKING:
    from llavaguard.guard.calibration import Calibration

IMAGES = ("image_max_pixels", "max_pixels", "max_file_mb")


@guard_options(MODEL, POLICY, IMAGES)
def calibrate(
    labels: Path = typer.Argument(..., help="Labelled set: JSONL, CSV, Parquet or LLaVA JSON."),
    predictions: Path | None = typer.Option(
        None, "--predictions", help="Predictions with scores (llavaguard assess JSONL)."
    ),
    output: Path = typer.Option(
        Path("calibration.json"), "--output", "-o", help="The calibration file to write."
    ),
    method: str = typer.Option(
        "auto",
        "--method",
        help="temperature, isotonic, or auto (isotonic only with 500+ "
        "samples, 50+ per class, and a lower cross-validated Brier score).",
    ),
    target_fpr: float | None = typer.Option(
        None, "--target-fpr", help="Also choose the threshold with at most this FPR."
    ),
    target_recall: float | None = typer.Option(
        None, "--target-recall", help="Also choose the threshold with at least this recall."
    ),
    bins: int = typer.Option(10, "--bins", min=2, help="Bins for ECE."),
    spec: GuardSpec = ...,
    batch_size: int = batch_size_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Fit temperature scaling (or isotonic regression) of P(Unsafe) on labelled samples,
    scored by --model (triage) or read from --predictions, and write it for --calibration.
    Samples under one policy are fitted: --policy's, else the one most samples carry."""
    from llavaguard.cli.common import progress_bar
    from llavaguard.evaluate.calibrate import CalibrateConfig, calibrate

    cfg = CalibrateConfig(
        labels=labels,
        predictions=predictions,
        guard=spec if "model" in spec.model_fields_set else None,
        policy_given=bool(spec.policy or spec.allow or spec.sensitive),
        output=output,
        method=method,
        target_fpr=target_fpr,
        target_recall=target_recall,
        bins=bins,
        batch_size=batch_size,
    )  # fmt: skip
    progress, on_start, on_batch = progress_bar(quiet, "scoring")
    try:
        cal = calibrate(cfg, on_start=on_start, on_batch=on_batch)
    finally:
        progress.stop()
    _summary(cal)
    typer.echo(str(output))


def _summary(cal: Calibration) -> None:
    f = cal.fitted
    before, after = f["before"], f["after_cross_validated"]
    err_console.print(
        f"{cal.method} on {f['samples']} samples ({f['unsafe']} Unsafe) under {cal.policy}: "
        f"ECE {before['ece']:.3f} -> {after['ece']:.3f}, Brier {before['brier']:.3f} -> "
        f"{after['brier']:.3f} (cross-validated)",
        highlight=False,
    )
    if cal.threshold is not None:
        t = cal.threshold
        err_console.print(f"threshold {t.threshold:.4f}: FPR {t.fpr:.3f}, recall {t.recall:.3f}",
                          highlight=False)  # fmt: skip
