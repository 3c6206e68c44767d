"""``llavaguard testing``: tiny offline models and sample images for trying integrations."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Build tiny random models and sample images, with no download.", no_args_is_help=True
)


@app.command("tiny-model", no_args_is_help=True)
def tiny_model(
    out: Path = typer.Argument(..., help="Folder to write the model to."),
    family: str = typer.Option(
        "llava-onevision", "--family", help="llava-onevision, llava or qwen2.5-vl."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed for the random weights."),
    size: str = typer.Option(
        "tiny",
        "--size",
        help="tiny; small (room to learn the synthetic benchmark); or 0.5b: the real "
        "LlavaGuard-0.5B architecture, for timing.",
    ),
) -> None:
    """Build a tiny, randomly initialised model that stock transformers and vLLM load."""
    from llavaguard.testing import build_tiny_model

    path = build_tiny_model(out, family, seed=seed, size=size)
    typer.echo(str(path))


@app.command("sample-images", no_args_is_help=True)
def sample_images(
    out: Path = typer.Argument(..., help="Folder to write the images to."),
    n: int = typer.Option(6, "-n", help="How many images."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write small images of several formats and modes, for trying the pipeline."""
    from llavaguard.testing import make_sample_images

    for path in make_sample_images(out, n, seed=seed):
        typer.echo(str(path))


@app.command("synthetic", no_args_is_help=True)
def synthetic(
    out: Path = typer.Argument(..., help="Folder for images/ and annotations.csv."),
    per_category: int = typer.Option(20, "--per-category", help="Unsafe images per O1-O9."),
    safe: int | None = typer.Option(None, "--safe", help="Safe images (default: as many)."),
    discard: int = typer.Option(3, "--discard", help="Rows scored 'Discard Sample'."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Write the synthetic visual-policy benchmark's images (each category a visual motif)
    with human-style annotations in the reference label space; prints the CSV's path."""
    from llavaguard.testing.synthetic import make_benchmark

    typer.echo(str(make_benchmark(out, per_category=per_category, safe=safe, discard=discard,
                                  seed=seed)))  # fmt: skip
