"""The routes, thin: take the parsed request, call the endpoint's handler, return its answer.

Paths and bodies are the API documented in docs/serving.md; the work lives in ``handlers``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from llavaguard.guard.assessment import Assessment
from llavaguard.serve.errors import ApiError
from llavaguard.serve.handlers import Handlers
from llavaguard.serve.protocol import (
    ChatCompletionResponse,
    ChatRequest,
    Health,
    ModelList,
    ModerationRequest,
    ModerationResponse,
)
from llavaguard.serve.protocol.assess import assess_request_body


def authorized(request: Request) -> None:
    """Bearer keys on /v1/*, when the server has any; /health and /metrics stay open."""
    keys = request.app.state.config.api_keys
    if not keys:
        return
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or key.strip() not in keys:
        raise ApiError(401, "missing or invalid API key", "authentication_error")


def handlers(request: Request) -> Handlers:
    return request.app.state.handlers


AUTH = [Depends(authorized)]
Served = Annotated[Handlers, Depends(handlers)]
router = APIRouter()


@router.get("/health")
async def health(h: Served) -> Health:
    return h.models.health()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.runtime.metrics.render()
    return Response(body, media_type=content_type)


@router.get("/v1/models", dependencies=AUTH)
async def models(h: Served) -> ModelList:
    return h.models.models()


@router.post("/v1/assess", dependencies=AUTH, openapi_extra=assess_request_body())
async def assess(request: Request, h: Served) -> Assessment:
    """Judge one image against a policy (the server's default, a built-in one by name, or
    a custom one), with exceptions declared allowed or sensitive."""
    return await h.assess.create(request)


@router.post("/v1/chat/completions", dependencies=AUTH)
async def chat(body: ChatRequest, h: Served) -> ChatCompletionResponse:
    """OpenAI chat completions for one user turn of images and text (vLLM's
    continue_final_message, response_format json_schema, logprobs for one token)."""
    return await h.chat.create(body)


@router.post("/v1/moderations", dependencies=AUTH)
async def moderations(body: ModerationRequest, h: Served) -> ModerationResponse:
    """OpenAI's moderation endpoint for images: one result per image part, categories
    from the server's active policy."""
    return await h.moderation.create(body)
