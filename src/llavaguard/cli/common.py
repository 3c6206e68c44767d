"""Shared CLI pieces: exit codes, the stderr console, and option definitions used twice."""

from __future__ import annotations

import typer
from rich.console import Console

EXIT_OK = 0
EXIT_SOME_FAILED = 1  # some inputs could not be assessed; their records say why
EXIT_SETUP = 2  # bad options, policy, model: nothing was assessed
EXIT_INTERRUPTED = 130

err_console = Console(stderr=True)


def engine_option() -> str:
    return typer.Option(
        "transformers",
        "--engine",
        help="transformers (local) or openai (a vLLM, SGLang or llavaguard server at --base-url).",
    )


def base_url_option() -> str | None:
    return typer.Option(
        None, "--base-url", help="With --engine openai: the server, e.g. http://host:8000/v1."
    )


def api_key_option() -> str | None:
    return typer.Option(
        None,
        "--api-key",
        envvar="LLAVAGUARD_API_KEY",
        show_envvar=True,
        help="With --engine openai: the server's API key.",
    )


def policy_option() -> str | None:
    return typer.Option(
        None, "--policy", "-p", help="Built-in policy name or a YAML/JSON policy file."
    )


def allow_option() -> str | None:
    return typer.Option(
        None, "--allow", help="Category codes declared allowed (non-violating), e.g. O3,O6."
    )


def sensitive_option() -> str | None:
    return typer.Option(
        None, "--sensitive", help="Category codes declared sensitive (forbidden in full)."
    )


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
