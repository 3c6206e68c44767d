"""The ``llavaguard`` command: a thin layer over the Python API.

Every command calls public functions with the same parameter names. Heavy libraries (torch,
transformers) are imported inside the commands that run a model, so ``--help`` and the
``policy`` commands start fast. Errors the user can fix print one line and exit 2.
"""

from __future__ import annotations

import sys

import typer
from pydantic import ValidationError

from llavaguard import __version__
from llavaguard.cli import annotate as _annotate
from llavaguard.cli import assess as _assess
from llavaguard.cli import calibrate as _calibrate
from llavaguard.cli import dataset as _dataset
from llavaguard.cli import demo as _demo
from llavaguard.cli import evaluate as _evaluate
from llavaguard.cli import models as _models
from llavaguard.cli import policy as _policy
from llavaguard.cli import review as _review
from llavaguard.cli import serve as _serve
from llavaguard.cli import testing as _testing
from llavaguard.cli import train as _train
from llavaguard.cli.common import EXIT_INTERRUPTED, EXIT_SETUP, err_console
from llavaguard.errors import LlavaGuardError

app = typer.Typer(
    name="llavaguard",
    help="Judge images against written safety policies with vision-language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("assess", no_args_is_help=True)(_assess.assess)
app.add_typer(_policy.app, name="policy")
app.command("models")(_models.models)
app.add_typer(_annotate.app, name="annotate")
app.add_typer(_dataset.app, name="dataset")
app.add_typer(_evaluate.app, name="evaluate")
app.command("calibrate", no_args_is_help=True)(_calibrate.calibrate)
app.add_typer(_review.app, name="review")
app.command("serve")(_serve.serve)
app.command("train", no_args_is_help=True)(_train.train)
app.command("demo")(_demo.demo)
app.add_typer(_testing.app, name="testing")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"llavaguard {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Judge images against written safety policies with vision-language models."""


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the app and turns our errors into one line on stderr."""
    try:
        code = app(args=argv, prog_name="llavaguard", standalone_mode=False)
    except LlavaGuardError as e:
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        return EXIT_SETUP
    except KeyboardInterrupt:
        err_console.print("interrupted", highlight=False)
        return EXIT_INTERRUPTED
    except typer.Exit as e:
        return e.exit_code
    except ValidationError as e:  # a configuration model refused an option
        first = e.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ())) or "option"
        msg = first.get("msg", str(e)).removeprefix("Value error, ")
        err_console.print(f"[bold red]error:[/] {where}: {msg}", highlight=False, soft_wrap=True)
        return EXIT_SETUP
    except Exception as e:  # click usage errors and aborts
        import click

        if isinstance(e, click.ClickException):
            e.show()
            return e.exit_code
        if isinstance(e, click.exceptions.Abort):
            return EXIT_INTERRUPTED
        raise
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
