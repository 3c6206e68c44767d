"""The HTTP service: one app factory, a lifespan that owns the model, thin routes.

Routes: POST /v1/assess, /v1/chat/completions (the OpenAI subset the remote engine and the
official client need), /v1/moderations (OpenAI's shape, categories from the active policy),
GET /v1/models, /health, /metrics (Prometheus) and the OpenAPI document (/openapi.json,
/docs). Every error is ``{"error": {"message", "type", "code"}}``, OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from llavaguard import __version__
from llavaguard.errors import ConfigError, EngineError, ImageError, LlavaGuardError, PolicyError
from llavaguard.serve.batcher import Batcher, QueueFull
from llavaguard.serve.config import ServeConfig
from llavaguard.serve.jobs import AssessJob, ChatJob, Job, TopLogprobsJob
from llavaguard.serve.metrics import Metrics
from llavaguard.serve.protocol import (
    AssessRequest,
    ChatRequest,
    ErrorResponse,
    ModerationRequest,
    ModerationResponse,
)
from llavaguard.serve.protocol.moderations import ModerationResult
from llavaguard.serve.urls import decode_base64, decode_data_url, fetch

if TYPE_CHECKING:
    from llavaguard.guard import Guard
    from llavaguard.policy import Policy


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def error_response(status: int, message: str, kind: str, **headers: str) -> JSONResponse:
    body = {"error": {"message": " ".join(message.split()), "type": kind, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers or None)


# ---- the service behind the routes ---------------------------------------------------------


class Service:
    """Owns the Guard (one model in memory) and the batcher that feeds it."""

    def __init__(self, config: ServeConfig, guard: Guard) -> None:
        from llavaguard.inputs.images import ImageLimits

        self.config = config
        self.guard = guard
        self.limits = ImageLimits(
            max_bytes=int(config.max_body_mb * 1024 * 1024), max_pixels=config.max_image_pixels
        )
        self.metrics = Metrics()
        self.batcher = Batcher(
            self.run,
            max_batch=config.max_batch_size,
            max_wait_ms=config.max_wait_ms,
            max_queue=config.max_queue,
            on_batch=self.metrics.batch,
        )
        self.metrics.queue_depth.set_function(lambda: self.batcher.depth)

    # runs in the model thread
    def run(self, job: Job, payloads: list[Any]) -> list[Any]:
        return job.run(self.guard, payloads)

    async def submit(self, job: Job, payload: Any) -> Any:
        try:
            return await self.batcher.submit(job, payload, self.config.request_timeout)
        except QueueFull as e:
            raise ApiError(503, f"server busy: {e}; retry shortly", "server_busy") from None
        except TimeoutError:
            raise ApiError(
                504, f"no answer within {self.config.request_timeout:g} s", "timeout"
            ) from None

    # ---- inputs -----------------------------------------------------------------------------
    async def image(self, data: bytes | None = None, url: str | None = None) -> Any:
        """A decoded RGB image, or ApiError 400 saying why not."""
        from llavaguard.inputs.images import load_image

        try:
            if url is not None:
                if url.startswith("data:"):
                    data = decode_data_url(url)
                elif not self.config.allow_image_urls:
                    raise ImageError("image URLs are not fetched by this server; send the image")
                else:
                    data = await run_in_threadpool(fetch, url, self.limits.max_bytes)
            if data is None:
                raise ImageError("no image given")
            return await run_in_threadpool(load_image, data, limits=self.limits, name="image")
        except ImageError as e:
            raise ApiError(400, str(e)) from None

    def policy(self, spec: Any = None, allow: Any = None, sensitive: Any = None) -> Policy:
        """The default policy, a built-in one by name, or a custom one given as data. Never a
        file path: a request must not make the server read its own files."""
        from llavaguard.policy import Policy, list_builtin

        try:
            if spec is None:
                base = self.guard.policy
            elif isinstance(spec, dict):
                base = Policy.from_data(spec)
            elif isinstance(spec, str) and spec in list_builtin():
                base = Policy.load(spec)
            else:
                raise PolicyError(
                    f"unknown policy {spec!r} (built-in: {', '.join(list_builtin())}; or send "
                    "a custom policy object)"
                )
            policy = base.with_states(allow=allow, sensitive=sensitive)
        except (PolicyError, ConfigError) as e:
            raise ApiError(400, str(e)) from None
        return policy

    async def assess(self, image: Any, policy: Policy, image_id: str) -> dict[str, Any]:
        a = await self.submit(AssessJob(policy), (image_id, image))
        if a.failed:
            raise ApiError(502, f"the model failed on this image: {a.error}", "engine_error")
        return a.model_dump(mode="json")


# ---- the app -------------------------------------------------------------------------------


def create_app(config: ServeConfig | None = None, guard: Guard | None = None) -> FastAPI:
    """The ASGI app. ``guard`` is loaded from ``config`` at start-up unless given."""
    config = config or ServeConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        g = guard
        if g is None:
            g = await run_in_threadpool(config.guard.build)
        service = Service(config, g)
        service.batcher.start()
        app.state.service = service
        try:
            yield
        finally:
            await service.batcher.stop()
            if guard is None:
                g.close()

    app = FastAPI(
        title="llavaguard",
        version=__version__,
        summary="Judge images against written safety policies with vision-language models.",
        lifespan=lifespan,
        responses={k: {"model": ErrorResponse} for k in (400, 401, 413, 503, 504)},
    )
    install_middleware(app, config)
    install_error_handlers(app)
    install_routes(app, config)
    return app


def service_of(request: Request) -> Service:
    return request.app.state.service


def install_middleware(app: FastAPI, config: ServeConfig) -> None:
    limit = int(config.max_body_mb * 1024 * 1024)

    @app.middleware("http")
    async def count_and_limit(request: Request, call_next):
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            response: Response = error_response(
                413, f"request body over {config.max_body_mb:g} MB", "request_too_large"
            )
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        service = getattr(request.app.state, "service", None)
        if service is not None:
            service.metrics.request(path, response.status_code, time.perf_counter() - started)
        return response


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        headers = {"Retry-After": "1"} if e.status == 503 else {}
        return error_response(e.status, e.message, e.kind, **headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        err = e.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        return error_response(400, f"{where}: {err.get('msg')}" if where else str(err.get("msg")),
                              "invalid_request_error")  # fmt: skip

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return error_response(e.status_code, str(e.detail), "invalid_request_error")

    @app.exception_handler(LlavaGuardError)
    async def ours(request: Request, e: LlavaGuardError):
        status = 502 if isinstance(e, EngineError) else 400
        return error_response(status, str(e), type(e).__name__)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception):
        return error_response(500, f"internal error: {e.__class__.__name__}: {e}", "internal")


def install_routes(app: FastAPI, config: ServeConfig) -> None:
    keys = set(config.api_keys)

    def authorized(request: Request) -> None:
        if not keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or key.strip() not in keys:
            raise ApiError(401, "missing or invalid API key", "authentication_error")

    auth = [Depends(authorized)]

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        s = service_of(request)
        return {"status": "ok", "model": s.guard.engine.model_id, "engine": s.guard.engine.name,
                "mode": s.guard.mode.value, "queue_depth": s.batcher.depth}  # fmt: skip

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        body, content_type = service_of(request).metrics.render()
        return Response(body, media_type=content_type)

    @app.get("/v1/models", dependencies=auth)
    async def models(request: Request) -> dict[str, Any]:
        model = service_of(request).guard.engine.model_id
        return {"object": "list",
                "data": [{"id": model, "object": "model", "owned_by": "llavaguard"}]}  # fmt: skip

    @app.post(
        "/v1/assess",
        dependencies=auth,
        openapi_extra={
            "requestBody": {
                "content": {
                    "application/json": {"schema": AssessRequest.model_json_schema()},
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "image": {"type": "string", "format": "binary"},
                                "id": {"type": "string"},
                                "policy": {"type": "string"},
                                "allow": {"type": "string"},
                                "sensitive": {"type": "string"},
                            },
                            "required": ["image"],
                        }
                    },
                },
                "required": True,
            }
        },
    )
    async def assess(request: Request) -> dict[str, Any]:
        """Judge one image against a policy (the server's default, a built-in one by name, or
        a custom one), with exceptions declared allowed or sensitive."""
        s = service_of(request)
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("image")
            if upload is None or isinstance(upload, str):
                raise ApiError(400, "multipart upload needs a file field 'image'")
            policy_field = form.get("policy")
            if isinstance(policy_field, str) and policy_field.lstrip().startswith("{"):
                try:
                    policy_field = json.loads(policy_field)
                except ValueError:
                    raise ApiError(400, "policy: invalid JSON") from None
            policy = s.policy(policy_field or None, form.get("allow"), form.get("sensitive"))
            image = await s.image(data=await upload.read())
            image_id = str(form.get("id") or upload.filename or "image")
        else:
            body = parse(AssessRequest, await json_body(request))
            if (body.image is None) == (body.image_url is None):
                raise ApiError(400, "give exactly one of 'image' (base64) and 'image_url'")
            policy = s.policy(body.policy, body.allow, body.sensitive)
            if body.image is not None:
                try:
                    data = decode_base64(body.image)
                except ImageError as e:
                    raise ApiError(400, str(e)) from None
                image = await s.image(data=data)
            else:
                image = await s.image(url=body.image_url)
            image_id = body.id or "image"
        return await s.assess(image, policy, image_id)

    @app.post("/v1/chat/completions", dependencies=auth)
    async def chat(request: Request, body: ChatRequest) -> dict[str, Any]:
        """OpenAI chat completions for one user turn of images and text (vLLM's
        continue_final_message, response_format json_schema, logprobs for one token)."""
        s = service_of(request)
        vision, config = await chat_inputs(s, body)
        want_top = body.logprobs and (body.top_logprobs or 0) > 0 and config.max_new_tokens == 1
        logprobs = None
        if want_top:
            if not s.guard.engine.capabilities.top_logprobs:
                raise ApiError(400, f"engine {s.guard.engine.name} gives no log-probabilities")
            top = await s.submit(TopLogprobsJob(body.top_logprobs), vision)
            text = top[0][0]
            logprobs = {"content": [{
                "token": text, "logprob": top[0][1], "bytes": list(text.encode()),
                "top_logprobs": [{"token": t, "logprob": lp, "bytes": list(t.encode())}
                                 for t, lp in top],
            }]}  # fmt: skip
        else:
            text = await s.submit(ChatJob(config), vision)
            if isinstance(text, Exception):
                raise ApiError(502, str(text), "engine_error")
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": s.guard.engine.model_id,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "logprobs": logprobs,
                    "message": {"role": "assistant", "content": text},
                }
            ],
        }

    @app.post("/v1/moderations", dependencies=auth, response_model=ModerationResponse)
    async def moderations(request: Request, body: ModerationRequest) -> ModerationResponse:
        """OpenAI's moderation endpoint for images: one result per image part, categories
        from the server's active policy."""
        s = service_of(request)
        parts = body.input if isinstance(body.input, list) else [body.input]
        urls = [p.image_url.url for p in parts if not isinstance(p, str) and p.image_url]
        if not urls:
            raise ApiError(400, "llavaguard moderates images: give image_url input parts")
        policy = s.policy()
        images = [await s.image(url=u) for u in urls]
        records = await asyncio.gather(
            *(s.assess(img, policy, f"input-{i}") for i, img in enumerate(images))
        )
        return ModerationResponse(
            id=f"modr-{uuid.uuid4().hex}",
            model=s.guard.engine.model_id,
            results=[moderation_result(r, policy) for r in records],
        )


async def json_body(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except ValueError:
        raise ApiError(400, "the body is not valid JSON") from None


def parse(model: type, data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ApiError(400, f"{where}: {err['msg']}" if where else err["msg"]) from None


async def chat_inputs(s: Service, body: ChatRequest) -> tuple[Any, Any]:
    """One user turn (images, then text), an optional system prompt and an optional final
    assistant message to continue; and the decoding options."""
    from llavaguard.engines import GenerationConfig, VisionRequest

    if body.stream:
        raise ApiError(400, "streaming is not supported")
    messages = list(body.messages)
    system = [m for m in messages if m.role in ("system", "developer")]
    turns = [m for m in messages if m.role not in ("system", "developer")]
    prefix = ""
    if body.continue_final_message and turns and turns[-1].role == "assistant":
        prefix = _text(turns.pop().content)
    if len(turns) != 1 or turns[0].role != "user":
        raise ApiError(400, "this server takes one user turn (images and text), optionally a "
                       "final assistant message with continue_final_message")  # fmt: skip
    images, texts = [], []
    content = turns[0].content
    for part in [content] if isinstance(content, str) else content or []:
        if isinstance(part, str):
            texts.append(part)
        elif part.type == "text":
            texts.append(part.text or "")
        elif part.image_url is not None:
            images.append(await s.image(url=part.image_url.url))
    sampling = body.temperature > 0
    schema = None
    if body.response_format:
        kind = body.response_format.get("type")
        if kind == "json_schema":
            schema = (body.response_format.get("json_schema") or {}).get("schema")
            if not isinstance(schema, dict):
                raise ApiError(400, "response_format.json_schema.schema must be an object")
        elif kind == "json_object":
            schema = {"type": "object"}
        elif kind != "text":
            raise ApiError(400, f"response_format type {kind!r} is not supported")
    try:
        config = GenerationConfig(
            max_new_tokens=body.max_completion_tokens
            or body.max_tokens
            or s.config.guard.generation.max_new_tokens,
            min_new_tokens=body.min_tokens,
            temperature=body.temperature,
            top_p=body.top_p if sampling else 1.0,
            top_k=body.top_k if sampling and body.top_k and body.top_k > 0 else None,
            seed=body.seed,
            json_schema=schema,
        )
    except ValidationError as e:
        raise ApiError(400, str(e.errors()[0]["msg"])) from None
    request = VisionRequest(
        text="\n".join(texts),
        images=tuple(images),
        system="\n".join(_text(m.content) for m in system) or None,
        prefix=prefix,
    )
    return request, config


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.text or "" for p in content if p.type == "text")


def moderation_result(record: dict[str, Any], policy: Policy) -> ModerationResult:
    """OpenAI's fields from an assessment. With scores, a category's score is
    P(Unsafe) x P(category | the answered rating): for an Unsafe answer the probability of
    "unsafe, for this category"; without scores, 1 for the flagged category, else 0."""
    flagged = record["rating"] == "Unsafe"
    labels = [c.label for c in policy.categories]
    p_unsafe = record.get("score")
    given = record.get("category_scores")
    if p_unsafe is not None and given:
        scores = {label: p_unsafe * given.get(label, 0.0) for label in labels}
    else:
        scores = {label: float(flagged and record["category"] == label) for label in labels}
    return ModerationResult(
        flagged=flagged,
        categories={label: flagged and record["category"] == label for label in labels},
        category_scores=scores,
        category_applied_input_types={label: ["image"] for label in labels},
        assessment=record,
    )
