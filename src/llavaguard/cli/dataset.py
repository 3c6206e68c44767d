"""``llavaguard dataset``: build training sets from labelled images."""

from __future__ import annotations

import json
from pathlib import Path

import typer

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
        help="Augmentations per Unsafe image (v1, v2, v2a, v3, v4, "
        "v5; repeat for independent draws). Default: the v1.2 recipe.",
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
) -> None:
    """Augment with policy exceptions, split per image, balance, and write train/test as a
    Hugging Face datasets folder, LLaVA JSON, TRL prompt/completion JSONL, LLaMA-Factory
    sharegpt JSON and evaluation labels, plus summary.json, summary.md and summary.png."""
    from llavaguard.dataset.build import build_dataset

    summary = build_dataset(
        str(labels), str(output), recipe=[r.strip() for r in recipe.split(",") if r.strip()],
        test_fraction=test_fraction, balance_train=balance, seed=seed,
        formats=[f.strip() for f in formats.split(",") if f.strip()],
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
) -> None:
    """Map human annotations (score words, label space) to ratings and policy categories;
    discarded and inconsistent rows are dropped and counted."""
    from llavaguard.dataset.labels import import_labels

    summary = import_labels(str(annotations), str(output),
                            str(mapping) if mapping else None, check_images)  # fmt: skip
    typer.echo(json.dumps(summary, indent=2))
