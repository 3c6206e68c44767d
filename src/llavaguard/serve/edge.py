"""The server's edge: what every request meets before a route reads a byte of its body.

A pure ASGI middleware (not ``@app.middleware("http")``, whose wrapper sits between the
route and the body), so the checks see the body as it streams in:

- the API key of ``/v1/*`` requests, checked on the headers alone: a keyless body is never
  read (401);
- ``--max-body-mb``, counted while the body arrives, chunked bodies included (a declared
  ``content-length`` over the limit is refused at once): nothing is read past the limit (413);
- ``--body-timeout``, a deadline for the whole body, so a client that sends a byte every few
  seconds is cut off (408);
- one count per request by route and status for ``/metrics``, refusals included.

Starlette's own ``max_body_size`` counts bytes the same way, but answers in its own shape
(plain text) where a route does not read the body; this one answers in the server's one error
shape everywhere. Refusals raised while a route reads the body are ``HTTPException``s, which
FastAPI passes through its body parsing untouched, so the error handlers shape them.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from typing import TYPE_CHECKING

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from llavaguard.serve.errors import error_response

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from llavaguard.serve.config import ServeConfig


def authorized(headers: Headers, keys: list[str]) -> bool:
    """A bearer key the server accepts, compared in constant time; any request when the
    server has no keys."""
    if not keys:
        return True
    scheme, _, key = headers.get("authorization", "").partition(" ")
    given = key.strip().encode()
    return scheme.lower() == "bearer" and any(hmac.compare_digest(given, k.encode()) for k in keys)


class Edge:
    """Key, body-size and body-time checks, and the request count (see the module)."""

    def __init__(self, app: ASGIApp, config: ServeConfig) -> None:
        self.app = app
        self.keys = list(config.api_keys)
        self.limit = int(config.max_body_mb * 1024 * 1024)
        self.too_large = f"request body over {config.max_body_mb:g} MB"
        self.body_timeout = config.body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client sees if no response starts (the server's own failure)

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            refusal = self.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, counted)
            else:
                await self.app(scope, self.limited(receive), counted)
        finally:
            count(scope, status, time.perf_counter() - started)

    def refusal(self, scope: Scope):
        """The answer to a request refused on its headers alone, or None."""
        headers = Headers(scope=scope)
        if scope["path"].startswith("/v1/") and not authorized(headers, self.keys):
            return error_response(401, "missing or invalid API key", "authentication_error",
                                  **{"WWW-Authenticate": "Bearer"})  # fmt: skip
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limit:
            return error_response(413, self.too_large, "request_too_large")
        return None

    def limited(self, receive: Receive) -> Receive:
        """``receive`` that refuses a body past the size limit or the deadline."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        size, done = 0, False

        async def receive_limited() -> Message:
            nonlocal size, done
            if done:  # the body is in; later messages (a disconnect) are not the body's
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(
                    408, f"request body not received within {self.body_timeout:g} s"
                ) from None
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if size > self.limit:
                    raise HTTPException(413, self.too_large)
            return message

        return receive_limited


def count(scope: Scope, status: int, seconds: float) -> None:
    """One request in the metrics, by the route it matched (``unmatched`` if none)."""
    app = scope.get("app")
    runtime = getattr(getattr(app, "state", None), "runtime", None)
    if runtime is not None:
        path = getattr(scope.get("route"), "path", "unmatched")
        runtime.metrics.request(path, status, seconds)
