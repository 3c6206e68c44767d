"""The routes, thin: take the parsed request, call the endpoint's handler, return its answer.

Paths and bodies are the API documented in docs/serving.md; the work lives in ``handlers``.
Keys, body size and body time are checked before a route runs, by ``edge``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from llavaguard.guard.assessment import Assessment
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


def handlers(request: Request) -> Handlers:
    return request.app.state.handlers


Served = Annotated[Handlers, Depends(handlers)]
router = APIRouter()


@router.get("/health")
async def health(h: Served) -> Health:
    return h.models.health()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.runtime.metrics.render()
    return Response(body, media_type=content_type)


@router.get("/v1/models")
async def models(h: Served) -> ModelList:
    return h.models.models()


@router.post("/v1/assess", openapi_extra=assess_request_body())
async def assess(request: Request, h: Served) -> Assessment:
    """Judge one image against a policy (the server's default, a built-in one by name, or
    a custom one), with exceptions declared allowed or sensitive."""
    return await h.assess.create(request)


@router.post("/v1/chat/completions")
async def chat(body: ChatRequest, h: Served) -> ChatCompletionResponse:
    """OpenAI chat completions for one user turn of images and text (vLLM's
    continue_final_message, response_format json_schema, logprobs for one token)."""
    return await h.chat.create(body)


@router.post("/v1/moderations")
async def moderations(body: ModerationRequest, h: Served) -> ModerationResponse:
    """OpenAI's moderation endpoint for images: one result per image part, categories
    from the server's active policy."""
    return await h.moderation.create(body)
