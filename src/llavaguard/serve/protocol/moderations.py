"""POST /v1/moderations: OpenAI's moderation shape, for images; categories are the labels of
the server's policy, and each result also carries the full assessment."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from llavaguard.serve.protocol.chat import ContentPart


class ModerationRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    input: str | list[str] | list[ContentPart]
    model: str | None = None


class ModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]
    # beyond OpenAI's shape: what the safeguard said and under which policy
    assessment: dict[str, Any] | None = None


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResult]
