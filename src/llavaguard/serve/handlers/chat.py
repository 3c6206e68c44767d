"""POST /v1/chat/completions: one user turn of images and text in, one choice out.

What the remote engine and the official client send: an optional system prompt, images then
text, optionally a final assistant message to continue (vLLM's ``continue_final_message``),
``response_format`` for structured output, and top log-probabilities for one-token answers
(how the remote engine scores the rating). No streaming, one choice.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from llavaguard.errors import ConfigError
from llavaguard.serve.errors import ApiError
from llavaguard.serve.handlers.base import Handler
from llavaguard.serve.jobs import ChatJob, TopLogprobsJob
from llavaguard.serve.protocol.chat import (
    AssistantMessage,
    ChatChoice,
    ChatCompletionResponse,
    ChatRequest,
    ChoiceLogprobs,
    ContentPart,
    TokenLogprob,
    TopLogprob,
)

if TYPE_CHECKING:
    from llavaguard.engines import GenerationConfig, VisionRequest

SYSTEM_ROLES = ("system", "developer")


class ChatHandler(Handler):
    async def create(self, body: ChatRequest) -> ChatCompletionResponse:
        if body.stream:
            raise ApiError(400, "streaming is not supported")
        config = self._generation_config(body)
        prepared = await self._prepare(config)
        turn, files = await self._turn(body)
        async with self.images(files) as images:
            request = replace(turn, images=tuple(images))
            logprobs = None
            if body.logprobs and (body.top_logprobs or 0) > 0 and config.max_new_tokens == 1:
                text, logprobs = await self._top_logprobs(request, body.top_logprobs)
            else:
                text = await self.runtime.submit(ChatJob(config, prepared), request)
        return ChatCompletionResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}",
            created=int(time.time()),
            model=self.guard.engine.model_id,
            choices=[ChatChoice(logprobs=logprobs, message=AssistantMessage(content=text))],
        )

    async def _prepare(self, config: GenerationConfig) -> Any:
        """The response schema checked against the size limits and compiled, in a worker
        thread (compiling grows with the schema) before anything is queued: the model thread
        then finds the grammar ready. ApiError 400 for a schema too large or invalid."""
        if config.json_schema is None:
            return None

        def check_and_compile() -> Any:
            from llavaguard.engines.constrain import check_schema_size

            limit = int(self.config.max_schema_kb * 1024)
            check_schema_size(config.json_schema, limit, self.config.max_schema_enum)
            return self.guard.engine.prepare(config)

        try:
            return await run_in_threadpool(check_and_compile)
        except ConfigError as e:
            raise ApiError(400, f"response_format: {e}") from None

    async def _top_logprobs(self, request: VisionRequest, k: int) -> tuple[str, ChoiceLogprobs]:
        """The most likely next token, with the ``k`` best as OpenAI reports them."""
        engine = self.guard.engine
        if not engine.capabilities.top_logprobs:
            raise ApiError(400, f"engine {engine.name} gives no log-probabilities")
        top = await self.runtime.submit(TopLogprobsJob(k), request)
        token, logprob = top[0]
        content = TokenLogprob.of(
            token, logprob, top_logprobs=[TopLogprob.of(t, lp) for t, lp in top]
        )
        return token, ChoiceLogprobs(content=[content])

    async def _turn(self, body: ChatRequest) -> tuple[VisionRequest, list[bytes]]:
        """One user turn (its text; its images' file bytes, decoded later within the memory
        budget), an optional system prompt and an optional final assistant message to
        continue."""
        from llavaguard.engines import VisionRequest

        system = [m for m in body.messages if m.role in SYSTEM_ROLES]
        turns = [m for m in body.messages if m.role not in SYSTEM_ROLES]
        prefix = ""
        if body.continue_final_message and turns and turns[-1].role == "assistant":
            prefix = turns.pop().text
        if len(turns) != 1 or turns[0].role != "user":
            raise ApiError(400, "this server takes one user turn (images and text), optionally "
                           "a final assistant message with continue_final_message")  # fmt: skip
        content = turns[0].content
        parts = [content] if isinstance(content, str) else content or []
        texts = [p if isinstance(p, str) else p.text or "" for p in parts if _is_text(p)]
        urls = [p.image_url.url for p in parts if _is_image(p)]
        self.check_parts(len(urls))
        files = [await self.image_bytes(url=url) for url in urls]
        request = VisionRequest(
            text="\n".join(texts),
            system="\n".join(m.text for m in system) or None,
            prefix=prefix,
        )
        return request, files

    def _generation_config(self, body: ChatRequest) -> GenerationConfig:
        """OpenAI's sampling fields as decoding options; the server's defaults fill the rest."""
        from llavaguard.engines import GenerationConfig

        sampling = body.temperature > 0
        default_tokens = self.config.guard.generation.max_new_tokens
        try:
            return GenerationConfig(
                max_new_tokens=body.max_completion_tokens or body.max_tokens or default_tokens,
                min_new_tokens=body.min_tokens,
                temperature=body.temperature,
                top_p=body.top_p if sampling else 1.0,
                top_k=body.top_k if sampling and body.top_k and body.top_k > 0 else None,
                seed=body.seed,
                json_schema=response_schema(body.response_format),
            )
        except ValidationError as e:
            raise ApiError(400, str(e.errors()[0]["msg"])) from None


def _is_text(part: str | ContentPart) -> bool:
    return isinstance(part, str) or part.type == "text"


def _is_image(part: str | ContentPart) -> bool:
    return not _is_text(part) and part.image_url is not None


def response_schema(response_format: dict[str, Any] | None) -> dict[str, Any] | None:
    """The JSON schema that ``response_format`` asks the answer to follow, if any."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ApiError(400, "response_format.json_schema.schema must be an object")
        return schema
    if kind == "json_object":
        return {"type": "object"}
    if kind != "text":
        raise ApiError(400, f"response_format type {kind!r} is not supported")
    return None
