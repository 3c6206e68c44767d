"""Shared CLI pieces: exit codes, the stderr console, and option definitions used twice."""

from __future__ import annotations

import typer
from rich.console import Console

EXIT_OK = 0
EXIT_SOME_FAILED = 1  # some inputs could not be assessed; their records say why
EXIT_SETUP = 2  # bad options, policy, model: nothing was assessed
EXIT_INTERRUPTED = 130

err_console = Console(stderr=True)


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
