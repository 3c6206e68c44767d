"""Request and response models of the HTTP API (the OpenAPI document is built from them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class AssessRequest(BaseModel):
    """JSON body of POST /v1/assess (a multipart upload takes the same fields as form fields,
    with the image as the file field ``image``)."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(None, description="The image, base64 or a base64 data: URL.")
    image_url: str | None = Field(None, description="Or an http(s) URL, when the server allows.")
    id: str | None = Field(None, description="Your id for the image, echoed as `image`.")
    policy: str | dict[str, Any] | None = Field(
        None, description="Built-in policy name, or a custom policy (the YAML file's shape)."
    )
    allow: list[str] | str | None = Field(None, description="Codes declared allowed.")
    sensitive: list[str] | str | None = Field(None, description="Codes declared sensitive.")


class ImageURL(BaseModel):
    model_config = ConfigDict(extra="allow")
    url: str
    detail: str | None = None


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: ImageURL | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPart] | None = None


class ChatRequest(BaseModel):
    """The subset of OpenAI's chat completions that image safeguards need, plus vLLM's
    ``continue_final_message`` / ``add_generation_prompt``, ``top_k`` and ``min_tokens``."""

    model_config = ConfigDict(extra="allow")

    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    min_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Default 0: greedy.")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int | None = Field(None)
    seed: int | None = None
    n: int = Field(1, ge=1, le=1, description="One choice per request.")
    stream: bool = False
    response_format: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    continue_final_message: bool = False
    add_generation_prompt: bool = True


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


class ErrorBody(BaseModel):
    message: str
    type: str
    code: int


class ErrorResponse(BaseModel):
    error: ErrorBody
