"""``llavaguard demo``: the whole loop offline, in about five minutes, on a CPU."""

from __future__ import annotations

from pathlib import Path

import typer

from llavaguard.cli.common import err_console


def demo(
    output: Path = typer.Option(Path("llavaguard-demo"), "--output", "-o"),
    scale: str = typer.Option(
        "demo",
        "--scale",
        help="demo (the default: about 5 minutes on 2 CPU cores), light (the test suite's "
        "run: the same training, fewer images annotated) or full (the benchmark, under the "
        "real v1.2 policy: about 45 minutes).",
    ),
    epochs: float | None = typer.Option(None, "--epochs", help="Override the scale's epochs."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Synthetic labelled images -> dataset -> fine-tuning a small model -> evaluation ->
    annotation of a new folder -> report. No download; prints where the report is."""
    from llavaguard.demo import SCALES, LoopConfig, run_loop
    from llavaguard.errors import ConfigError

    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r} (valid: {', '.join(SCALES)})")
    preset = dict(SCALES[scale])
    if epochs is not None:
        preset["epochs"] = epochs
    result = run_loop(
        LoopConfig(output=output, seed=seed, **preset),
        say=lambda m: err_console.print(m, highlight=False),
    )
    for name, c in result["checks"].items():
        mark = "ok" if c["passed"] else "below"
        err_console.print(f"{name}: {c['value']} (threshold {c['threshold']}, {mark})")
    typer.echo(str(output / "report.md"))
