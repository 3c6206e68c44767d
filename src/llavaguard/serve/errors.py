"""The server's one error shape, OpenAI's: ``{"error": {"message", "type", "code"}}``.

Handlers raise ``ApiError`` (or let a ``LlavaGuardError`` through); the handlers installed
here turn every exception, FastAPI's validation errors and unknown routes included, into that
shape with a one-line message, so a client parses every failure the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from llavaguard.errors import EngineError, LlavaGuardError, one_line

M = TypeVar("M", bound=BaseModel)

TOO_DEEP = "the request is nested too deeply"
# OpenAI-style error types of the statuses the edge (serve.edge) and Starlette answer
HTTP_KINDS = {401: "authentication_error", 408: "timeout", 413: "request_too_large"}


class ApiError(Exception):
    """A failure the client is told about: HTTP status, one-line message, OpenAI ``type``."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def error_response(status: int, message: str, kind: str, **headers: str) -> JSONResponse:
    """The one error shape; the message on one line, without library source locations."""
    message = one_line(message)
    body = {"error": {"message": message, "type": kind, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def first_error(errors: Sequence[Any]) -> str:
    """``where: what`` for the first of pydantic's errors (the request body's own name left
    out: clients name fields, not FastAPI's ``body``)."""
    err = errors[0]
    where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
    message = str(err.get("msg")).removeprefix("Value error, ")  # a validator's own words
    return f"{where}: {message}" if where else message


def loads(raw: str | bytes, what: str = "the body") -> Any:
    """JSON text as data, or ApiError 400: invalid, or nested past what the parser takes."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise ApiError(400, f"{what}: JSON nested too deeply") from None
    except ValueError:
        raise ApiError(400, f"{what} is not valid JSON") from None


def parse(model: type[M], data: Any) -> M:
    """``data`` validated as ``model``, or ApiError 400 naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ApiError(400, first_error(e.errors())) from None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError) -> JSONResponse:
        headers = {"Retry-After": "1"} if e.status == 503 else {}
        return error_response(e.status, e.message, e.kind, **headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        return error_response(400, first_error(e.errors()), "invalid_request_error")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException) -> JSONResponse:
        kind = HTTP_KINDS.get(e.status_code, "invalid_request_error")
        return error_response(e.status_code, str(e.detail), kind, **(e.headers or {}))

    @app.exception_handler(RecursionError)
    async def too_deep(request: Request, e: RecursionError) -> JSONResponse:
        # only a request's own nesting reaches this deep (JSON, a policy, a schema)
        return error_response(400, TOO_DEEP, "invalid_request_error")

    @app.exception_handler(LlavaGuardError)
    async def ours(request: Request, e: LlavaGuardError) -> JSONResponse:
        status = 502 if isinstance(e, EngineError) else 400
        return error_response(status, str(e), type(e).__name__)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, e: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {e.__class__.__name__}: {e}", "internal")
