"""Shared CLI pieces: exit codes, the stderr console, loading with a spinner, progress bars.
The options commands share are in ``llavaguard.cli.options``."""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

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
    with nullcontext() if quiet else err_console.status(f"loading {spec.model}", spinner="dots"):
        return spec.load_engine() if engine_only else spec.build()


PROGRESS_MIN_IMAGES = 4


def progress_bar(quiet: bool, label: str):
    """(progress, on_start(total), on_batch(n)): a bar on stderr, shown only when there are
    more than a few images."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    progress = Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    )
    task: list[int] = []

    def on_start(total: int) -> None:
        if not quiet and total >= PROGRESS_MIN_IMAGES:
            progress.start()
            task.append(progress.add_task(label, total=total))

    def on_batch(n: int) -> None:
        if task:
            progress.advance(task[0], n)

    return progress, on_start, on_batch
