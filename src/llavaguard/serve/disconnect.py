"""Cancel a request's work when its client goes away.

An ASGI app hears of a disconnect only when it reads the body, and a handler waiting for the
model reads nothing: left alone, a request whose client hung up keeps its jobs queued and
runs them for nobody. This middleware listens once the body has been read, and cancels the
request's handler when the client disconnects; the cancellation takes the request's queued
jobs out of the batcher's queue (see ``Batcher.submit_many``).
"""

from __future__ import annotations

from typing import Any

import anyio

Scope = dict[str, Any]
Message = dict[str, Any]


class CancelOnDisconnect:
    """Pure ASGI middleware (not ``BaseHTTPMiddleware``: that one reads ``receive`` itself)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body_read = anyio.Event()
        responding = False

        async def receive_body() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_read.set()
            return message

        async def sending(message: Message) -> None:
            nonlocal responding
            responding = True  # from here on, the server's receive may end on its own
            await send(message)

        async with anyio.create_task_group() as group:

            async def watch() -> None:
                await body_read.wait()
                message = await receive()  # returns only on a disconnect (or after the answer)
                if message["type"] == "http.disconnect" and not responding:
                    group.cancel_scope.cancel()

            group.start_soon(watch)
            await self.app(scope, receive_body, sending)
            group.cancel_scope.cancel()
