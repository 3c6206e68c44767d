"""``llavaguard serve``: the HTTP service (assess, OpenAI chat and moderations, metrics)."""

from __future__ import annotations

import typer

from llavaguard.cli.options import DECODING, MODEL, POLICY, _opt, guard_options
from llavaguard.guard.spec import GuardSpec
from llavaguard.serve.config import ServeConfig


# --api-key here names the keys the server accepts (a list); the engine runs in this process
@guard_options(
    tuple(n for n in MODEL if n not in ("base_url", "api_key", "concurrency")),
    POLICY,
    DECODING,
    ("mode", "threshold", "image_max_pixels", "multi_label", "calibration"),
)
def serve(
    spec: GuardSpec = ...,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", help="Port to listen on."),
    max_batch_size: int = typer.Option(8, "--max-batch-size", min=1, help="Requests a batch."),
    max_wait_ms: float = typer.Option(10.0, "--max-wait-ms", help="Wait for a batch to fill."),
    max_queue: int = typer.Option(64, "--max-queue", min=1, help="Waiting requests, then 503."),
    request_timeout: float = typer.Option(300.0, "--timeout", help="Seconds, then 504."),
    max_body_mb: float = typer.Option(20.0, "--max-body-mb", help="Largest request body."),
    accepted_keys: list[str] = typer.Option(
        [],
        "--api-key",
        envvar="LLAVAGUARD_API_KEYS",
        show_envvar=True,
        help="Accepted bearer key (repeat for several); none: open.",
    ),
    allow_image_urls: bool = typer.Option(
        False, "--allow-image-urls", help="Fetch http(s) image URLs (never private addresses)."
    ),
    # connections: how long a client may take
    header_timeout: float = _opt(ServeConfig, "header_timeout"),
    body_timeout: float = _opt(ServeConfig, "body_timeout"),
    keep_alive_timeout: float = _opt(ServeConfig, "keep_alive_timeout"),
    # resources: what one request, and all of them at once, may take
    max_image_parts: int = _opt(ServeConfig, "max_image_parts", min=1),
    max_request_image_mb: float = _opt(ServeConfig, "max_request_image_mb"),
    max_image_memory_mb: float = _opt(ServeConfig, "max_image_memory_mb"),
    max_policy_kb: float = _opt(ServeConfig, "max_policy_kb"),
    max_policy_categories: int = _opt(ServeConfig, "max_policy_categories", min=1),
    max_schema_kb: float = _opt(ServeConfig, "max_schema_kb"),
    max_schema_enum: int = _opt(ServeConfig, "max_schema_enum", min=1),
    shutdown_timeout: float = _opt(ServeConfig, "shutdown_timeout"),
) -> None:
    """Serve assessments over HTTP with dynamic batching: /v1/assess, /v1/chat/completions,
    /v1/moderations, /health, /metrics, /docs."""
    from llavaguard.serve import serve as run

    config = ServeConfig(
        guard=spec, host=host, port=port, max_batch_size=max_batch_size,
        max_wait_ms=max_wait_ms, max_queue=max_queue, request_timeout=request_timeout,
        max_body_mb=max_body_mb, api_keys=[k for key in accepted_keys for k in key.split(",") if k],
        allow_image_urls=allow_image_urls, header_timeout=header_timeout,
        body_timeout=body_timeout, keep_alive_timeout=keep_alive_timeout,
        max_image_parts=max_image_parts,
        max_request_image_mb=max_request_image_mb, max_image_memory_mb=max_image_memory_mb,
        max_policy_kb=max_policy_kb, max_policy_categories=max_policy_categories,
        max_schema_kb=max_schema_kb, max_schema_enum=max_schema_enum,
        shutdown_timeout=shutdown_timeout,
    )  # fmt: skip
    run(config)
