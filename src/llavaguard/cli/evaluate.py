"""``llavaguard evaluate``: score predictions against labels, write reports, compare runs."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from llavaguard.cli.common import err_console
from llavaguard.cli.options import (
    DECODING,
    JUDGING,
    MODEL,
    batch_size_option,
    guard_options,
    quiet_option,
)
from llavaguard.guard.spec import GuardSpec

app = typer.Typer(
    help="Score a safeguard against a labelled set; compare runs.", no_args_is_help=True
)

# a labels file, or a public benchmark's copy (inputs/benchmarks.py): defined here, out of the
# signature of run, which stays readable
_LABELS = typer.Argument(
    None, help="Labelled set: JSONL, CSV, Parquet or LLaVA JSON (or --benchmark)."
)
_BENCHMARK = typer.Option(
    None,
    "--benchmark",
    help="Instead of LABELS, a public benchmark: unsafebench, vlguard, safeeditbench, "
    "llavaguard (its local copy in --data).",
)
_DATA = typer.Option(
    None, "--data", help="With --benchmark: the folder of its copy, in the published layout."
)
_SPLIT = typer.Option(None, "--split", help="With --benchmark: the split (default: test).")
_LABEL_MAP = typer.Option(
    None,
    "--label-map",
    help="With --benchmark: YAML/JSON {its category: O-code or NA}, over the default table.",
)


@app.command("run", no_args_is_help=True)
# --seed here seeds the bootstrap and the variants; decoding stays greedy and unseeded
@guard_options(MODEL, tuple(n for n in DECODING if n != "seed"), JUDGING)
def run(
    labels: Path | None = _LABELS,
    benchmark: str | None = _BENCHMARK,
    data: Path | None = _DATA,
    split: str | None = _SPLIT,
    label_map: Path | None = _LABEL_MAP,
    predictions: Path | None = typer.Option(
        None,
        "--predictions",
        help="Predictions to score (llavaguard assess JSONL or any "
        "table with id/image and rating).",
    ),
    output: Path = typer.Option(Path("eval-report"), "--output", "-o", help="Report folder."),
    name: str | None = typer.Option(None, "--name", help="Run name (default: folder name)."),
    variants: str | None = typer.Option(
        None,
        "--variants",
        help="Add policy-generalisation variants (comma-separated kinds, or 'all'); needs --model.",
    ),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Resamples for 95% intervals."),
    seed: int = typer.Option(0, "--seed", help="Seed for bootstrap and variants."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write PNG plots."),
    spec: GuardSpec = ...,
    batch_size: int = batch_size_option(),
    quiet: bool = quiet_option(),
) -> None:
    """Evaluate predictions (from a file, or from --model) against a labelled set (LABELS, or a
    public benchmark's copy: --benchmark, --data) and write report.json, report.md,
    samples.jsonl and plots/ to the output folder. Samples are judged under their own
    policies, so the shared policy options are not taken here."""
    from llavaguard.cli.common import progress_bar
    from llavaguard.evaluate import EvalConfig, evaluate

    cfg = EvalConfig(
        labels=labels,
        benchmark=benchmark,
        data=data,
        split=split,
        label_map=label_map,
        predictions=predictions,
        guard=spec if "model" in spec.model_fields_set else None,
        calibration=spec.calibration,
        output=output,
        name=name,
        variants=[v.strip() for v in (variants or "").split(",") if v.strip()],
        bootstrap=bootstrap,
        seed=seed,
        plots=plots,
        batch_size=batch_size,
    )
    progress, on_start, on_batch = progress_bar(quiet, "predicting")
    try:
        report = evaluate(cfg, on_start=on_start, on_batch=on_batch)
    finally:
        progress.stop()
    _say(report, output, quiet)


def _say(report: dict, output: Path, quiet: bool) -> None:
    """The warnings (even with --quiet: they change what was scored), then the headline."""
    from llavaguard.evaluate.report import headline, pct

    for note in report["warnings"]:
        err_console.print(f"warning: {note}", highlight=False, soft_wrap=True)
    if quiet:
        return
    o = report["overall"]
    h = headline(o)
    err_console.print(
        f"{o['n']} samples, {o['invalid']} without a rating: balanced accuracy "
        f"{pct(h['balanced_accuracy'])}, recall {pct(h['recall'])}, specificity "
        f"{pct(h['specificity'])}, PER {pct(h['per'])} (%, invalid excluded)",
        highlight=False,
    )
    err_console.print(f"report: {output / 'report.md'}", highlight=False)


@app.command("compare", no_args_is_help=True)
def compare(
    runs: list[Path] = typer.Argument(..., help="Report folders (or report.json files)."),
    slice_: str = typer.Option(
        "overall",
        "--slice",
        help="overall, default_policy, variants, or a category, augmentation or variant name.",
    ),
    wrong: bool = typer.Option(False, "--invalid-wrong", help="Count invalid answers as wrong."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Also write the table (.md) or the data (.json) here."
    ),
) -> None:
    """Print the headline metrics of several runs side by side."""
    from llavaguard.evaluate.compare import comparison, markdown

    comp = comparison(runs, slice_, "wrong" if wrong else "excluded")
    table = markdown(comp)
    typer.echo(table, nl=False)
    if output is not None:
        text = json.dumps(comp, indent=2) + "\n" if output.suffix == ".json" else table
        output.write_text(text, encoding="utf-8")


@app.command("variants", no_args_is_help=True)
def variants_cmd(
    labels: Path = typer.Argument(..., help="Labelled set to derive variants from."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL labelled set to write."),
    kinds: str = typer.Option("all", "--kinds", help="Comma-separated kinds, or 'all'."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write the labelled set's samples under policy variants, with the label each implies
    (to predict with any system, then 'evaluate run --predictions')."""
    from llavaguard.evaluate import make_variants
    from llavaguard.inputs.labels import read_labels, write_labels

    samples = read_labels(labels)
    made = make_variants(samples, [k.strip() for k in kinds.split(",") if k.strip()], seed)
    write_labels(made, output)
    err_console.print(f"{len(made)} variant samples -> {output}", highlight=False)
