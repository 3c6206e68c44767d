"""``llavaguard policy``: list policies and print the exact prompt a model will receive."""

from __future__ import annotations

import json
import sys

import typer

from llavaguard.cli.options import shared_option

app = typer.Typer(help="Inspect policies: the text a model reads.", no_args_is_help=True)


@app.command("list")
def list_policies() -> None:
    """List the built-in policies and their categories."""
    from llavaguard.policy import DEFAULT_POLICY, Policy, list_builtin

    for name in list_builtin():
        p = Policy.load(name)
        mark = " (default)" if name == DEFAULT_POLICY else ""
        typer.echo(f"{name}{mark}: {len(p.categories)} categories, id {p.id[:12]}")
        for c in p.categories:
            typer.echo(f"  {c.label}")


@app.command("show")
def show(
    policy: str | None = shared_option("policy"),
    allow: str | None = shared_option("allow"),
    sensitive: str | None = shared_option("sensitive"),
    as_json: bool = typer.Option(
        False, "--json", help="Print name, id, states, labels and text as JSON."
    ),
) -> None:
    """Print the exact prompt text (byte for byte what the model receives)."""
    from llavaguard.policy import Policy

    p = Policy.load(policy, allow=allow, sensitive=sensitive)
    if as_json:
        doc = {
            "name": p.name,
            "id": p.id,
            "allowed": p.allowed,
            "sensitive": p.sensitive,
            "labels": p.labels,
            "text": p.text,
        }
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    sys.stdout.write(p.text)
    if sys.stdout.isatty():
        sys.stdout.write("\n")
    sys.stdout.flush()
