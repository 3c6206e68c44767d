"""``llavaguard annotate``: annotate a dataset resumably, report on it, export subsets."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from llavaguard.cli.common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    err_console,
    progress_bar,
    resumable,
    unit_progress,
)
from llavaguard.cli.options import ALL, batch_size_option, guard_options, quiet_option
from llavaguard.guard.spec import GuardSpec

if TYPE_CHECKING:  # imported when a command runs: the CLI starts fast
    from llavaguard.annotate import AnnotateConfig, Summary

app = typer.Typer(
    help="Annotate whole datasets (resumable), report on them, export curated subsets.",
    no_args_is_help=True,
)


@app.command("run", no_args_is_help=True)
@guard_options(ALL)
def run(
    inputs: list[str] = typer.Argument(
        ...,
        help="Folders, path lists (.txt), tables (.csv/.parquet), tar shards or globs, "
        "or a datasets folder.",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Results folder (resumed if there)."),
    source: str = typer.Option(
        "auto", "--source", help="auto, folder, list, table, webdataset, hf."
    ),
    path_column: str | None = typer.Option(None, "--path-column", help="table: path column."),
    id_column: str | None = typer.Option(None, "--id-column", help="table/hf: id column."),
    image_column: str | None = typer.Option(None, "--image-column", help="hf: image column."),
    spec: GuardSpec = ...,
    batch_size: int = batch_size_option(),
    shard_size: int = typer.Option(1000, "--shard-size", min=1, help="Rows per Parquet shard."),
    flush_seconds: float = typer.Option(
        60.0, "--flush-seconds", help="Close a shard after this long, however few its rows."
    ),
    workers: int = typer.Option(2, "--workers", min=1, help="Threads reading ahead."),
    dedup: bool = typer.Option(True, "--dedup/--no-dedup", help="Judge identical bytes once."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start the folder over."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Stop after N new inputs."),
    backend: str = typer.Option("local", "--backend", help="local or ray."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Ray cluster address."),
    ray_actors: int = typer.Option(1, "--ray-actors", min=1, help="Engine actors on Ray."),
    ray_cpus: float = typer.Option(1.0, "--ray-cpus", min=0, help="CPUs per Ray actor."),
    ray_gpus: float | None = typer.Option(None, "--ray-gpus", min=0, help="GPUs per actor."),
    ray_base_url: list[str] = typer.Option(
        [], "--ray-base-url", help="A server for Ray actors (repeat: actors take turns)."
    ),
    unit_size: int = typer.Option(1000, "--unit-size", min=1, help="Ray: inputs per unit."),
    quiet: bool = quiet_option(),
) -> None:
    """Annotate a dataset into Parquet shards; rerun the same command to resume.

    On Ray the actors read and write work units (a tar, a Parquet row group, --unit-size
    inputs of a list or folder) themselves; the bar counts units.

    Exit status: 0 when every input got an answer, 1 when some failed (their rows say why)
    or a unit failed every try (the manifest says why),
    2 for set-up errors (a folder that cannot be written, or that another run is writing),
    130 when interrupted (the folder stays resumable).
    """
    from llavaguard.annotate import AnnotateConfig

    cfg = AnnotateConfig(
        inputs=inputs, output=output, source=source, path_column=path_column,
        id_column=id_column, image_column=image_column, guard=spec,
        batch_size=batch_size, shard_size=shard_size, flush_seconds=flush_seconds,
        workers=workers,
        dedup=dedup, overwrite=overwrite, limit=limit, backend=backend,
        ray_address=ray_address, ray_actors=ray_actors, ray_cpus=ray_cpus, ray_gpus=ray_gpus,
        ray_base_urls=ray_base_url, unit_size=unit_size,
    )  # fmt: skip
    summary = _annotate(cfg, quiet)
    if not quiet:
        err_console.print(summary.line(), highlight=False)
    raise typer.Exit(EXIT_SOME_FAILED if summary.failed or summary.units_failed else EXIT_OK)


def _annotate(cfg: AnnotateConfig, quiet: bool) -> Summary:
    """The run, with a bar over inputs (local) or over work units (Ray)."""
    from llavaguard.annotate import annotate

    if cfg.backend == "ray":
        progress, on_start, on_unit = unit_progress(quiet)
        with resumable(progress, cfg.output):
            return annotate(cfg, on_start=on_start, on_unit=on_unit)
    progress, on_start, on_batch = progress_bar(quiet, "annotating", rate=True)
    with resumable(progress, cfg.output):
        return annotate(cfg, on_start=on_start, on_batch=on_batch)


@app.command("report", no_args_is_help=True)
def report(
    folder: Path = typer.Argument(..., help="A results folder."),
    output: Path | None = typer.Option(None, "--output", "-o", help="Where (default: folder)."),
    thumbnails: int = typer.Option(0, "--thumbnails", help="Grid of the N most flagged images."),
) -> None:
    """Counts per rating and category, unsafe rate, errors, throughput, cache hits; report.md,
    report.json and plots."""
    from llavaguard.annotate import write_report

    path = write_report(folder, output, thumbnails)
    typer.echo(path.read_text(encoding="utf-8"), nl=False)


@app.command("export", no_args_is_help=True)
def export(
    folder: Path = typer.Argument(..., help="A results folder."),
    to: Path = typer.Option(..., "--to", help="Output folder, list file or shard folder."),
    keep: str = typer.Option("safe", "--keep", help="safe, unsafe or all (rated rows)."),
    categories: str | None = typer.Option(
        None, "--categories", help="Codes or labels, e.g. O1,O2."
    ),
    min_score: float | None = typer.Option(None, "--min-score", help="P(Unsafe) at least."),
    max_score: float | None = typer.Option(None, "--max-score", help="P(Unsafe) at most."),
    fmt: str = typer.Option("folder", "--format", help="folder, list or webdataset."),
    link: bool = typer.Option(False, "--link", help="folder: symlink instead of copying."),
) -> None:
    """Write the curated subset: images to a folder, their paths to a list, or new tar shards."""
    from llavaguard.annotate import export as run_export
    from llavaguard.errors import ConfigError

    if keep not in ("safe", "unsafe", "all"):
        raise ConfigError(f"--keep must be safe, unsafe or all, not {keep!r}")
    n = run_export(
        folder, to, fmt=fmt, link=link, keep=keep,
        categories=[c for c in (categories or "").split(",") if c.strip()],
        min_score=min_score, max_score=max_score,
    )  # fmt: skip
    err_console.print(f"{n} images -> {to}", highlight=False)
