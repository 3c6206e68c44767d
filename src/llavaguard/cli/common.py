"""Shared CLI pieces: exit codes, the stderr console, loading with a spinner, progress bars.
The options commands share are in ``llavaguard.cli.options``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from llavaguard.guard.spec import GuardSpec

EXIT_OK = 0
EXIT_SOME_FAILED = 1  # some inputs could not be assessed; their records say why
EXIT_SETUP = 2  # bad options, policy, model: nothing was assessed
EXIT_INTERRUPTED = 130

err_console = Console(stderr=True)


def load_with_spinner(spec: GuardSpec, quiet: bool, engine_only: bool = False) -> Any:
    """The spec's Guard (or its engine alone), with a spinner on stderr while it loads."""
    from llavaguard.guard.core import Guard

    with nullcontext() if quiet else err_console.status(f"loading {spec.model}", spinner="dots"):
        return spec.load_engine() if engine_only else Guard.from_spec(spec)


PROGRESS_MIN_IMAGES = 4


def _bar(field: str | None) -> Any:
    """A bar on stderr: done of total and the time left, with ``field`` (a text the caller
    updates) and the time elapsed beside it when given."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    extra = [TextColumn(f"{{task.fields[{field}]}}"), TimeElapsedColumn()] if field else []
    return Progress("[progress.description]{task.description}", BarColumn(),
                    MofNCompleteColumn(), *extra, TimeRemainingColumn(), console=err_console,
                    transient=False)  # fmt: skip


def progress_bar(quiet: bool, label: str, *, rate: bool = False) -> tuple[Any, Any, Any]:
    """(progress, on_start(total), on_batch(n)): a bar on stderr. A plain bar shows only for
    more than a few images; with ``rate`` (long runs whose total may be unknown) it always
    shows, with the speed and the time elapsed."""
    progress = _bar("rate" if rate else None)
    task: list[Any] = []

    def on_start(total: int | None) -> None:
        if not quiet and (rate or (total or 0) >= PROGRESS_MIN_IMAGES):
            progress.start()
            task.append(progress.add_task(label, total=total, rate=""))

    def on_batch(n: int) -> None:
        if task:
            progress.advance(task[0], n)
            speed = progress.tasks[0].speed if rate else None
            progress.update(task[0], rate=f"{speed:.2f}/s" if speed else "")

    return progress, on_start, on_batch


def unit_progress(quiet: bool) -> tuple[Any, Any, Any]:
    """(progress, on_start(units), on_unit(summary)): a Ray run's bar on stderr, over units
    (with the time left where their number is known), with rows and images/s beside it."""
    progress = _bar("rows")
    task: list[Any] = []

    def on_start(total: int | None) -> None:
        if not quiet:
            progress.start()
            task.append(progress.add_task("units", total=total, rows=""))

    def on_unit(summary: Any) -> None:
        if task:
            elapsed = progress.tasks[0].elapsed or 0.0
            rate = f", {summary.rows / elapsed:.1f} images/s" if elapsed else ""
            progress.update(task[0], advance=1, rows=f"{summary.rows} rows{rate}")

    return progress, on_start, on_unit


@contextmanager
def resumable(progress: Any, output: Any) -> Iterator[None]:
    """Stop the bar however the run ends; Ctrl-C says how to resume and exits 130."""
    try:
        yield
    except KeyboardInterrupt:
        progress.stop()
        err_console.print(f"interrupted; rerun the same command to resume ({output})")
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        progress.stop()
