"""``llavaguard serve``: the HTTP service (assess, OpenAI chat and moderations, metrics)."""

from __future__ import annotations

import typer

from llavaguard.cli.common import allow_option, policy_option, sensitive_option
from llavaguard.models import DEFAULT_MODEL


def serve(
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Hub id or local folder."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    policy: str | None = policy_option(),
    allow: str | None = allow_option(),
    sensitive: str | None = sensitive_option(),
    mode: str = typer.Option("full", "--mode", help="full or triage (scores only)."),
    threshold: float | None = typer.Option(None, "--threshold", help="Unsafe when P >= T."),
    device: str | None = typer.Option(None, "--device", help="cuda, mps, cpu (default: best)."),
    dtype: str | None = typer.Option(None, "--dtype", help="float32, bfloat16, float16."),
    max_new_tokens: int = typer.Option(500, "--max-new-tokens", min=1, help="Answer limit."),
    image_max_pixels: int | None = typer.Option(
        None, "--image-max-pixels", help="Downscale images to this many pixels (faster)."
    ),
    max_batch_size: int = typer.Option(8, "--max-batch-size", min=1, help="Requests a batch."),
    max_wait_ms: float = typer.Option(10.0, "--max-wait-ms", help="Wait for a batch to fill."),
    max_queue: int = typer.Option(64, "--max-queue", min=1, help="Waiting requests, then 503."),
    request_timeout: float = typer.Option(300.0, "--timeout", help="Seconds, then 504."),
    max_body_mb: float = typer.Option(20.0, "--max-body-mb", help="Largest request body."),
    api_key: list[str] = typer.Option(
        [],
        "--api-key",
        envvar="LLAVAGUARD_API_KEYS",
        show_envvar=True,
        help="Accepted bearer key (repeat for several); none: open.",
    ),
    allow_image_urls: bool = typer.Option(
        False, "--allow-image-urls", help="Fetch http(s) image URLs (never private addresses)."
    ),
) -> None:
    """Serve assessments over HTTP with dynamic batching: /v1/assess, /v1/chat/completions,
    /v1/moderations, /health, /metrics, /docs."""
    from llavaguard.policy import Policy, parse_codes
    from llavaguard.serve import ServeConfig
    from llavaguard.serve import serve as run

    Policy.load(policy, allow=allow, sensitive=sensitive)  # fail fast, before loading
    config = ServeConfig(
        model=model, host=host, port=port, policy=policy, allow=parse_codes(allow),
        sensitive=parse_codes(sensitive), mode=mode, threshold=threshold, device=device,
        dtype=dtype, max_new_tokens=max_new_tokens, image_max_pixels=image_max_pixels,
        max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms, max_queue=max_queue, request_timeout=request_timeout,
        max_body_mb=max_body_mb, api_keys=[k for key in api_key for k in key.split(",") if k],
        allow_image_urls=allow_image_urls,
    )  # fmt: skip
    run(config)
