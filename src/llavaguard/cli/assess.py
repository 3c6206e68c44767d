"""``llavaguard assess``: judge image files against a policy and write one record per input."""

from __future__ import annotations

from pathlib import Path

import typer

from llavaguard.cli.common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    err_console,
    load_with_spinner,
    progress_bar,
)
from llavaguard.cli.options import ALL, batch_size_option, guard_options, quiet_option
from llavaguard.guard.spec import GuardSpec


@guard_options(ALL)
def assess(
    paths: list[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    spec: GuardSpec = ...,
    batch_size: int = batch_size_option(),
    format: str = typer.Option("jsonl", "--format", "-f", help="jsonl, json or table."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="File to write (default stdout)."
    ),
    quiet: bool = quiet_option(),
) -> None:
    """Assess images against a policy; one record per input, in input order.

    Exit status: 0 when every input was assessed, 1 when some inputs failed (their records
    say why), 2 for set-up errors (model, policy, options).
    """  # fmt: skip
    from llavaguard.assess import assess_files
    from llavaguard.sinks import FORMATS

    FORMATS.get(format)  # an unknown format fails before the model loads
    guard = load_with_spinner(spec, quiet)
    progress, on_start, on_batch = progress_bar(quiet, "assessing")
    try:
        with guard:
            summary = assess_files(
                paths,
                guard,
                batch_size=batch_size,
                format=format,
                output=output,
                on_start=on_start,
                on_batch=on_batch,
            )
    finally:
        progress.stop()
    if not quiet:
        err_console.print(summary.line(), highlight=False)
        for line in summary.failures[:5]:
            err_console.print(f"  failed: {line}", highlight=False, soft_wrap=True)
    raise typer.Exit(EXIT_SOME_FAILED if summary.failed else EXIT_OK)
