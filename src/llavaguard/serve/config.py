"""Everything ``llavaguard serve`` can be told, in one place, with defaults that work."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from llavaguard.guard.spec import GuardSpec


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    guard: GuardSpec = Field(
        default_factory=GuardSpec,
        description="The safeguard served; its policy is what /v1/assess and /v1/moderations "
        "judge by default.",
    )
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port (0: any free port).")
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
    # connections
    header_timeout: float = Field(
        10.0, gt=0, description="Seconds for a request's line and headers to arrive, then 408."
    )
    body_timeout: float = Field(
        60.0, gt=0, description="Seconds for a request's whole body to arrive, then 408."
    )
    keep_alive_timeout: float = Field(
        5.0, gt=0, description="Seconds an idle connection stays open between requests."
    )
    # resources
    max_policy_kb: float = Field(256.0, gt=0, description="Largest inline custom policy (JSON).")
    max_policy_categories: int = Field(100, ge=1, description="Most categories in a policy.")
    max_image_parts: int = Field(8, ge=1, description="Most images in one request.")
    max_request_image_mb: float = Field(
        256.0, gt=0, description="Decoded image memory one request may take (413 beyond)."
    )
    max_image_memory_mb: float = Field(
        1024.0, gt=0, description="Decoded image memory of all requests at once (503 beyond)."
    )
    max_schema_kb: float = Field(64.0, gt=0, description="Largest response_format JSON schema.")
    max_schema_enum: int = Field(1000, ge=1, description="Most enum values in that schema.")
    shutdown_timeout: float = Field(
        5.0, ge=0, description="Seconds requests get to finish after SIGTERM; then cancelled."
    )

    @model_validator(mode="after")
    def _request_fits_the_server(self) -> ServeConfig:
        if self.max_request_image_mb > self.max_image_memory_mb:
            raise ValueError("max_request_image_mb cannot exceed max_image_memory_mb")
        return self
