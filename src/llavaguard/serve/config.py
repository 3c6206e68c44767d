"""Everything ``llavaguard serve`` can be told, in one place, with defaults that work."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from llavaguard.models import DEFAULT_MODEL


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(DEFAULT_MODEL, description="Hub id or local folder to serve.")
    engine: str = Field("transformers", description="Engine that runs the model.")
    device: str | None = Field(None, description="cuda, mps, cpu (default: best).")
    dtype: str | None = Field(None, description="float32, bfloat16, float16 (default: by device).")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port (0: any free port).")
    # what /v1/assess and /v1/moderations judge by default
    policy: str | None = Field(None, description="Default policy: built-in name or file.")
    allow: list[str] = Field(default_factory=list, description="Default allowed codes.")
    sensitive: list[str] = Field(default_factory=list, description="Default sensitive codes.")
    mode: str = Field("full", description="full (rationale) or triage (scores only).")
    threshold: float | None = Field(None, description="Unsafe when P(Unsafe) >= threshold.")
    max_new_tokens: int = Field(500, ge=1, description="Answer length limit.")
    image_max_pixels: int | None = Field(
        None, description="Downscale images to this many pixels before the model (faster)."
    )
    # batching
    max_batch_size: int = Field(8, ge=1, description="Most requests in one engine batch.")
    max_wait_ms: float = Field(10.0, ge=0, description="How long a batch waits to fill.")
    max_queue: int = Field(64, ge=1, description="Waiting requests before answering 503.")
    # limits
    request_timeout: float = Field(300.0, gt=0, description="Seconds before a 504.")
    max_body_mb: float = Field(20.0, gt=0, description="Largest request body.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Largest image (w x h).")
    api_keys: list[str] = Field(
        default_factory=list, description="Accepted bearer keys; none: no authentication."
    )
    allow_image_urls: bool = Field(
        False, description="Fetch http(s) image URLs (never private or loopback addresses)."
    )
