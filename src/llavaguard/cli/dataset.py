"""``llavaguard dataset``: build training sets from labelled images."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import typer

from llavaguard.cli.common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    load_with_spinner,
    progress_bar,
    resumable,
)
from llavaguard.cli.options import (
    DECODING,
    MODEL,
    batch_size_option,
    guard_options,
    quiet_option,
    shared_option,
)
from llavaguard.guard.spec import GuardSpec

app = typer.Typer(help="Build policy-following training sets from labelled images.",
                  no_args_is_help=True)  # fmt: skip


@app.command("build", no_args_is_help=True)
def build(
    labels: Path = typer.Argument(
        ...,
        help="Labelled images: JSONL/JSON/CSV/Parquet with "
        "image, rating, category, optional id and rationale.",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Folder for the dataset."),
    recipe: str = typer.Option(
        "v3,v3,v3,v2",
        "--recipe",
        help="Augmentations per image (v1, v2, v2a, v3, v4, v5 of Unsafe images; v6, v7 of "
        "Unsafe and v8 of Safe images: one category in force; repeat for independent draws). "
        "Default: the v1.2 recipe.",
    ),
    test_fraction: float = typer.Option(0.2, "--test-fraction", help="Images held out."),
    balance: bool = typer.Option(
        True, "--balance/--no-balance", help="Oversample to balance ratings in train."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for augmentations, split and balance."),
    formats: str = typer.Option(
        "hf,llava,trl,sharegpt,labels",
        "--formats",
        help="Exports to write: hf (datasets folder with the images inside), llava, trl, "
        "sharegpt (LLaMA-Factory), labels (always written: the evaluation reads them).",
    ),
    policy: str | None = shared_option("policy"),
) -> None:
    """Augment with policy exceptions, split per image, balance, and write train/test as a
    Hugging Face datasets folder, LLaVA JSON, TRL prompt/completion JSONL, LLaMA-Factory
    sharegpt JSON and evaluation labels, plus summary.json, summary.md and summary.png."""
    from llavaguard.dataset.build import build_dataset

    summary = build_dataset(
        str(labels), str(output), recipe=[r.strip() for r in recipe.split(",") if r.strip()],
        test_fraction=test_fraction, balance_train=balance, seed=seed,
        formats=[f.strip() for f in formats.split(",") if f.strip()], policy=policy,
    )  # fmt: skip
    short = {
        name: {k: v for k, v in counts.items() if not k.startswith("by_")}
        for name, counts in summary["splits"].items()
    }  # the cross-tabs are in summary.md
    typer.echo(json.dumps(short, indent=2))


@app.command("import", no_args_is_help=True)
def import_(
    annotations: Path = typer.Argument(
        ..., help="CSV/JSONL/Parquet with image, score (or rating) and category (or label)."
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Labelled-images JSONL to write."),
    mapping: Path | None = typer.Option(
        None,
        "--mapping",
        help="YAML with scores: and/or categories: mappings (default: the "
        "LlavaGuard annotation label space).",
    ),
    check_images: bool = typer.Option(True, "--check-images/--no-check-images"),
    policy: str | None = shared_option("policy"),
) -> None:
    """Map human annotations (score words, label space) to ratings and policy categories;
    discarded and inconsistent rows are dropped and counted."""
    from llavaguard.dataset.labels import import_labels

    summary = import_labels(str(annotations), str(output),
                            str(mapping) if mapping else None, check_images, policy)  # fmt: skip
    typer.echo(json.dumps(summary, indent=2))


_RATIONALES_OUTPUT = typer.Option(
    ..., "--output", "-o",
    help="JSONL to write (resumed when it exists): the rows plus rationale, status and "
    "provenance.",
)  # fmt: skip
_DROP_REJECTED = typer.Option(
    True, "--drop-rejected/--keep-rejected",
    help="Rejected rows go to <stem>.rejected.jsonl, or stay in the output without a rationale.",
)  # fmt: skip


@app.command("rationales", no_args_is_help=True)
@guard_options(MODEL, ("policy",), DECODING[:-1], ("image_max_pixels",))  # no --constrain
def rationales(
    labels: Path = typer.Argument(
        ..., help="Labelled images, as for build: image, rating, category, optional id."
    ),
    output: Path = _RATIONALES_OUTPUT,
    spec: GuardSpec = ...,
    batch_size: int = batch_size_option(),
    attempts: int = typer.Option(3, "--attempts", min=1, help="Tries per image before rejecting."),
    retry_temperature: float = typer.Option(
        0.7, "--retry-temperature", help="Retries sample at this, retry n with seed + n."
    ),
    filters: str = typer.Option(
        "repeats,length,unfinished,contradiction",
        "--filters",
        help="Filters a rationale must pass (comma-separated; empty for none).",
    ),
    min_chars: int = typer.Option(40, "--min-chars", min=0, help="Shorter is rejected."),
    max_chars: int = typer.Option(1200, "--max-chars", min=1, help="Longer is rejected."),
    drop_rejected: bool = _DROP_REJECTED,
    retry_errors: bool = typer.Option(
        False, "--retry-errors", help="Redo rows that failed in an earlier run."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start the output over."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Stop after N new rows."),
    quiet: bool = quiet_option(),
) -> None:
    """Ask a teacher VLM to justify each image's true rating and category; filter what it
    writes; retry with sampling; append rows as they finish (rerun to resume).

    Exit status: 0 when every row got an answer (accepted or rejected), 1 when some failed
    (their rows in the .rejected file say why), 2 for set-up errors, 130 when interrupted.
    """
    from llavaguard.dataset.rationales import RationaleConfig, generate_rationales
    from llavaguard.errors import ConfigError

    if "model" not in spec.model_fields_set:
        raise ConfigError("rationales need a teacher: --model (hub id, folder or served name)")
    cfg = RationaleConfig(
        teacher=spec, batch_size=batch_size, attempts=attempts,
        retry_temperature=retry_temperature,
        filters=[f.strip() for f in filters.split(",") if f.strip()], min_chars=min_chars,
        max_chars=max_chars, drop_rejected=drop_rejected, retry_errors=retry_errors,
        overwrite=overwrite, limit=limit,
    )  # fmt: skip

    # loaded only when there is work: a finished output loads no teacher
    load = functools.partial(load_with_spinner, spec, quiet, engine_only=True)
    progress, on_start, on_batch = progress_bar(quiet, "rationales")
    with resumable(progress, output):
        summary = generate_rationales(labels, output, load, policy=spec.load_policy(), config=cfg,
                                      on_start=on_start, on_batch=on_batch)  # fmt: skip
    typer.echo(json.dumps(summary, indent=2))
    raise typer.Exit(EXIT_SOME_FAILED if summary["errors"] else EXIT_OK)
