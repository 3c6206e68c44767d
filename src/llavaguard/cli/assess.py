"""``llavaguard assess``: judge image files against a policy and write one record per input."""

from __future__ import annotations

from pathlib import Path

import typer

from llavaguard.cli.common import (
    EXIT_OK,
    EXIT_SOME_FAILED,
    allow_option,
    api_key_option,
    base_url_option,
    engine_option,
    err_console,
    policy_option,
    progress_bar,
    sensitive_option,
)
from llavaguard.models import DEFAULT_MODEL


def assess(
    paths: list[Path] = typer.Argument(..., help="Image files or folders (searched recursively)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Hub id or local folder."),
    engine: str = engine_option(),
    base_url: str | None = base_url_option(),
    api_key: str | None = api_key_option(),
    policy: str | None = policy_option(),
    allow: str | None = allow_option(),
    sensitive: str | None = sensitive_option(),
    batch_size: int = typer.Option(4, "--batch-size", "-b", min=1, help="Images per batch."),
    format: str = typer.Option("jsonl", "--format", "-f", help="jsonl, json or table."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="File to write (default stdout)."
    ),
    device: str | None = typer.Option(None, "--device", help="cuda, mps, cpu (default: best)."),
    dtype: str | None = typer.Option(
        None, "--dtype", help="float32, bfloat16, float16 (default: by device)."
    ),
    token: str | None = typer.Option(
        None, "--token", envvar="HF_TOKEN", help="Hub token for gated weights.", show_envvar=True
    ),
    revision: str | None = typer.Option(
        None, "--revision", help="Hub revision (branch, tag, commit)."
    ),
    max_new_tokens: int = typer.Option(500, "--max-new-tokens", min=1, help="Generation limit."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy (default)."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling (with --temperature)."),
    top_k: int | None = typer.Option(None, "--top-k", help="Top-k sampling (with --temperature)."),
    num_beams: int = typer.Option(1, "--num-beams", min=1, help="Beam search width."),
    seed: int | None = typer.Option(None, "--seed", help="Seed for sampling."),
    max_pixels: int | None = typer.Option(
        None, "--max-pixels", help="Reject larger images (default 80M)."
    ),
    max_file_mb: float | None = typer.Option(
        None, "--max-file-mb", help="Reject larger files (default 64)."
    ),
    mode: str = typer.Option(
        "full", "--mode", help="full: rating, category, rationale, scores. triage: no rationale."
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Decide the rating as P(Unsafe) >= T instead of the argmax."
    ),
    constrain: bool = typer.Option(
        True, "--constrain/--no-constrain", help="Constrain answers to the policy's JSON schema."
    ),
    image_max_pixels: int | None = typer.Option(
        None,
        "--image-max-pixels",
        help="Downscale images to at most this many pixels before the model (fewer image "
        "tokens, faster); e.g. 147456 = one 384x384 tile.",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Assess images against a policy; one record per input, in input order.

    Exit status: 0 when every input was assessed, 1 when some inputs failed (their records
    say why), 2 for set-up errors (model, policy, options).
    """  # fmt: skip
    from llavaguard.assess import assess_files
    from llavaguard.engines import GenerationConfig
    from llavaguard.errors import ConfigError
    from llavaguard.guard import Guard
    from llavaguard.inputs.images import ImageLimits
    from llavaguard.policy import Policy
    from llavaguard.sinks import FORMATS

    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r} (valid: {', '.join(FORMATS)})")
    active = Policy.load(policy, allow=allow, sensitive=sensitive)  # fail fast, before loading
    try:
        generation = GenerationConfig(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            num_beams=num_beams,
            seed=seed,
        )
    except ValueError as e:
        raise ConfigError(str(e).splitlines()[-1].strip()) from None
    limits = {}
    if max_pixels is not None:
        limits["max_pixels"] = max_pixels
    if max_file_mb is not None:
        limits["max_bytes"] = int(max_file_mb * 1024 * 1024)
    engine_options = {"device": device, "dtype": dtype, "token": token, "revision": revision}
    if engine == "openai":
        engine_options.update(base_url=base_url, api_key=api_key, concurrency=batch_size)
    elif base_url or api_key:
        raise ConfigError("--base-url and --api-key go with --engine openai")
    with err_console.status(f"loading {model}", spinner="dots") if not quiet else _null():
        guard = Guard.from_pretrained(
            model,
            engine=engine,
            policy=active,
            generation=generation,
            image_limits=ImageLimits(**limits),
            mode=mode,
            threshold=threshold,
            constrained=constrain,
            image_max_pixels=image_max_pixels,
            **engine_options,
        )
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


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None
