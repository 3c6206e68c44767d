"""Limits on what an input may be before it is decoded; apart from the decoder so that
options and configs can name them without importing Pillow."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ImageLimits(BaseModel):
    """Limits applied before decoding; the defaults admit any real photo.

    Pillow's own ``Image.MAX_IMAGE_PIXELS`` (about 89 M) still applies on top of
    ``max_pixels``: raise it too to go beyond.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Largest file or byte string.")
    max_pixels: int = Field(80_000_000, ge=1, description="Largest width x height.")
