"""Connection timeouts uvicorn does not have: a deadline for a request's head, and an end to
connections whose body the server no longer reads.

uvicorn closes a connection idle between requests (``timeout_keep_alive``), but any byte
resets that, and a new connection has no timer at all: a client sending a header line a byte
every few seconds (slowloris) held a connection forever. ``TimedH11Protocol`` gives each
request's head (line and headers) ``header_timeout`` seconds from the connection's start or
the previous answer; past it the client gets a one-line 408 (or, if it sent nothing, the
connection is just closed). The body's deadline is ``serve.edge``'s (``body_timeout``).

When the server answers before a body was read to its end (401, 413, 408), the rest of that
body is read and thrown away for at most ``LINGER_S`` seconds, then the connection closes:
closing at once would make the client's kernel drop the answer it has not read yet (a TCP
reset), lingering without end would let the client keep the connection by trickling.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

LINGER_S = 2.0


def timed_protocol(header_timeout: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a ``header_timeout`` on every request's head."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"header_timeout": header_timeout})


def timeout_response(message: str) -> bytes:
    """A raw 408 in the server's error shape, for a request that never became one (h11 has
    no request to answer yet, so it is written to the socket as bytes)."""
    body = json.dumps({"error": {"message": message, "type": "timeout", "code": 408}}).encode()
    head = (
        "HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class TimedH11Protocol(H11Protocol):
    header_timeout = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:  # the head is in
            self._disarm_head()

    def on_response_complete(self) -> None:
        if not self.transport.is_closing() and self.conn.their_state is h11.SEND_BODY:
            # answered before the body was read to its end: drain it a moment, then close
            self.loop.call_later(LINGER_S, self.transport.close)
        else:
            self._arm_head()  # the next request's head; a pipelined one disarms it at once
        super().on_response_complete()

    def _arm_head(self) -> None:
        self._disarm_head()
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_expired)

    def _disarm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:  # part of a head came: say why the connection ends
            message = f"request head not received within {self.header_timeout:g} s"
            self.transport.write(timeout_response(message))
        self.transport.close()
