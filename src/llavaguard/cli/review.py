"""``llavaguard review``: a web page to go through what a safeguard judged and correct it, and
the export of the corrections as a labelled set."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer
from typer.core import TyperGroup

from llavaguard.cli.common import err_console
from llavaguard.cli.options import shared_option
from llavaguard.errors import ConfigError


class _OpenByDefault(TyperGroup):
    """``llavaguard review RESULTS`` is ``llavaguard review open RESULTS``."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["open", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_OpenByDefault,
    no_args_is_help=True,
    help="Review what a safeguard judged in a web page; export the corrections.",
)


@app.command("open", no_args_is_help=True)
def open_page(
    results: Path = typer.Argument(..., help="An annotation results folder or assess .jsonl."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8765, "--port", help="Port to listen on."),
    # not the shared --token (a hub token): the page's own, asked of every request
    page_token: str | None = typer.Option(
        None, "--token", envvar="LLAVAGUARD_REVIEW_TOKEN", help="Required of every request."
    ),
    reviewer: str = typer.Option("reviewer", "--reviewer", help="Who the corrections are by."),
    # not the shared --model (its default is the released weights): none, no playground
    playground_model: str | None = typer.Option(
        None, "--model", help="A model for the policy playground (judge an item again)."
    ),
) -> None:
    """Serve the review page: a grid of the rows (filters, order by P(Unsafe) or uncertainty),
    the image and its answer, keys to correct them; corrections are saved at once beside the
    results (_review.sqlite)."""
    import uvicorn

    from llavaguard.review.app import create_app

    if page_token is None and not _loopback(host):
        raise ConfigError(f"--host {host} is reachable from elsewhere: give a --token")
    guard = None
    if playground_model is not None:
        from llavaguard.guard import Guard, GuardSpec

        guard = Guard.from_spec(GuardSpec(model=playground_model))
    app_ = create_app(results, token=page_token, reviewer=reviewer, guard=guard)
    where = f"http://{host}:{port}/" + (f"?token={page_token}" if page_token else "")
    err_console.print(f"review page: {where}", highlight=False)
    uvicorn.run(app_, host=host, port=port, log_level="warning")


@app.command("export", no_args_is_help=True)
def export(
    results: Path = typer.Argument(..., help="The reviewed results folder or assess .jsonl."),
    output: Path = typer.Option(..., "--output", "-o", help="Labels file to write (.jsonl)."),
    policy: str | None = shared_option("policy"),
) -> None:
    """The reviewed items as a labelled set that dataset build, dataset rationales and
    evaluate run read as they are. --policy: the one the results were judged by, where they
    do not name it (assess files); it must have the same id."""
    from llavaguard.review import export_reviewed

    n = export_reviewed(results, output, policy=policy)
    err_console.print(f"{n} reviewed items -> {output}", highlight=False)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"
