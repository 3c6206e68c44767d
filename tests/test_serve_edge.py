"""The server's edge without a model: the URL filter, the request checks of the chat
protocol, error messages, and the edge middleware in process (the real server under attack is
tests/test_hostile.py). Literal addresses only; the one name resolved is a fake resolver's."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import typing

import httpx
import pytest
from fastapi import FastAPI, Request

from llavaguard.errors import ImageError
from llavaguard.serve import ServeConfig, urls
from llavaguard.serve.edge import Edge
from llavaguard.serve.errors import error_response, install_error_handlers
from llavaguard.serve.protocol.chat import ChatRequest

INTERNAL_IN_DISGUISE = [
    "64:ff9b::a9fe:a9fe",  # NAT64 of the metadata address 169.254.169.254
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
    "::a9fe:a9fe",  # IPv4-compatible
    "::7f00:1",
    "::ffff:a9fe:a9fe",  # IPv4-mapped
    "::ffff:0:7f00:1",  # SIIT
    "::ffff:0:a00:1",  # SIIT of 10.0.0.1
    "2002:a9fe:a9fe::",  # 6to4
    "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
]


@pytest.mark.parametrize("address", INTERNAL_IN_DISGUISE)
def test_ipv6_forms_of_internal_ipv4_addresses_are_refused(address):
    with pytest.raises(ImageError) as e:
        urls.fetch(f"http://[{address}]/a.png", max_bytes=1000)
    assert "refused" in str(e.value) and "\n" not in str(e.value)


def test_ipv6_forms_of_public_ipv4_addresses_pass_the_filter():
    import ipaddress

    for address in ("64:ff9b::808:808", "2002:808:808::1", "2606:4700:4700::1111", "8.8.8.8"):
        assert urls.refusal(ipaddress.ip_address(address)) is None, address


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:99999/a.png", "http://[::1/a.png", "http://[::1]:-1/a.png",
     "http://bücher.test/a.png"],
)  # fmt: skip
def test_malformed_image_urls_are_one_line_image_errors(url):
    with pytest.raises(ImageError) as e:
        urls.fetch(url, max_bytes=1000)
    assert str(e.value).startswith("image URL: ") and "\n" not in str(e.value)
    assert "refused" not in str(e.value)  # refused as malformed, before any lookup


class Images(http.server.BaseHTTPRequestHandler):
    seen: typing.ClassVar[list[str]] = []

    def do_GET(self):
        Images.seen.append(self.headers["Host"])
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"image")

    def log_message(self, *args):
        pass


def test_the_connection_goes_to_the_address_that_was_checked(monkeypatch):
    """A name is resolved once; the request goes to that address, under the original Host.
    (A DNS-rebinding name answers an internal address on its second lookup: there is none.)"""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Images)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    real, lookups = socket.getaddrinfo, []

    def resolver(host, *args, **kwargs):
        if host == "images.test":  # a public address the first time, anything after
            lookups.append(host)
            return real("127.0.0.1" if len(lookups) == 1 else "10.9.9.9", *args, **kwargs)
        return real(host, *args, **kwargs)  # literal addresses only, for the connection

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    monkeypatch.setattr(urls, "refusal", lambda ip: None if str(ip) == "127.0.0.1" else "no")
    try:
        assert urls.fetch(f"http://images.test:{port}/a.png", max_bytes=100) == b"image"
    finally:
        server.shutdown()
    assert lookups == ["images.test"]
    assert Images.seen == [f"images.test:{port}"]


def chat(**fields) -> dict:
    return {"messages": [{"role": "user", "content": "hi"}], **fields}


def schema(s) -> dict:
    return {"response_format": {"type": "json_schema", "json_schema": {"schema": s}}}


def deep(depth: int) -> dict:
    s: dict = {"type": "string"}
    for _ in range(depth):
        s = {"type": "object", "properties": {"a": s}}
    return s


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"seed": 2**80}, "seed"),
        ({"seed": -(2**64)}, "seed"),
        (schema(deep(200)), "nested deeper than 64"),
        (schema(deep(900)), "nested deeper than 64"),
    ],
)
def test_chat_requests_bound_seed_and_schema(fields, message):
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as e:
        ChatRequest.model_validate(chat(**fields))
    assert message in str(e.value)


def test_chat_requests_take_64_bit_seeds_and_modest_schemas():
    ChatRequest.model_validate(chat(seed=2**63 - 1, **schema(deep(30))))
    ChatRequest.model_validate(chat(seed=-(2**63)))
    # a json_schema that is no object: the handler refuses it in its words (no crash here)
    ChatRequest.model_validate(chat(response_format={"type": "json_schema", "json_schema": "s"}))


def test_error_messages_lose_library_source_locations():
    raw = '[23:43:10] /project/cpp/json_schema_converter.cc:5082: Unsupported type "frob"'
    body = error_response(502, f"model: generation failed (RuntimeError: {raw})", "x").body
    assert b"/project/" not in body and b"Unsupported type" in body


def edge_app(**config) -> tuple[FastAPI, list[int]]:
    """An app with the server's edge and error handlers, and a route that reads its body
    (how many bytes each request's route read goes to the list)."""
    app = FastAPI()
    read: list[int] = []

    @app.post("/v1/echo")
    async def echo(request: Request) -> dict:
        body = b""
        async for chunk in request.stream():
            body += chunk
            read.append(len(body))
        return {"size": len(body)}

    install_error_handlers(app)
    app.add_middleware(Edge, config=ServeConfig(**config))
    return app, read


async def post(app: FastAPI, **kwargs) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.post("/v1/echo", **kwargs)


def test_the_edge_refuses_a_keyless_request_without_reading_its_body():
    app, read = edge_app(api_keys=["k"])
    r = asyncio.run(post(app, content=b"x" * 1000))
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert read == []
    r = asyncio.run(post(app, content=b"x" * 1000, headers={"Authorization": "Bearer k"}))
    assert r.status_code == 200 and r.json() == {"size": 1000}


def test_the_edge_counts_a_body_without_content_length_as_it_arrives():
    app, read = edge_app(max_body_mb=1)

    async def pieces():
        for _ in range(100):  # 6.4 MB, no content-length
            yield b"x" * 65536

    r = asyncio.run(post(app, content=pieces()))
    assert r.status_code == 413
    assert r.json()["error"] == {"message": "request body over 1 MB", "type": "request_too_large",
                                 "code": 413}  # fmt: skip
    assert max(read) <= 1024 * 1024
