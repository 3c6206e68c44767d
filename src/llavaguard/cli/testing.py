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
    """Build a tiny, randomly initialised model that stock transformers loads."""
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
