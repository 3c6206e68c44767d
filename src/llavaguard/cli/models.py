"""``llavaguard models``: the released safeguard models this package knows by name."""

from __future__ import annotations

import typer


def models() -> None:
    """List known model ids with their family; any other id or folder works too."""
    from llavaguard.models import DEFAULT_MODEL, KNOWN_MODELS

    for spec in KNOWN_MODELS.values():
        mark = " (default)" if spec.id == DEFAULT_MODEL else ""
        runtime = "" if spec.transformers else "  [not transformers: " + spec.note + "]"
        typer.echo(f"{spec.id}{mark}  {spec.family} {spec.size}{runtime}")
