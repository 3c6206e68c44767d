"""Images named by URL: ``data:`` URLs always, http(s) only when enabled, and then never
from private, loopback, link-local or otherwise internal addresses (no SSRF)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
from urllib.parse import urljoin, urlsplit

from llavaguard.errors import ImageError

MAX_REDIRECTS = 3


def decode_data_url(url: str) -> bytes:
    header, sep, data = url.partition(",")
    if not sep or not header.startswith("data:") or ";base64" not in header:
        raise ImageError("image URL: only base64 data: URLs are read inline")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("image URL: invalid base64 in data: URL") from None


def decode_base64(text: str) -> bytes:
    if text.startswith("data:"):
        return decode_data_url(text)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("image: invalid base64") from None


def _public(host: str, port: int) -> None:
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except OSError as e:
        raise ImageError(f"image URL: cannot resolve {host}") from e
    for info in infos:
        ip = ipaddress.ip_address(info[4][0])
        if not ip.is_global or ip.is_multicast:
            raise ImageError(f"image URL: {host} is a private or internal address; refused")


def fetch(url: str, max_bytes: int, timeout: float = 10.0) -> bytes:
    """GET an http(s) image, checking every address (redirects too) before connecting."""
    import httpx

    for _ in range(MAX_REDIRECTS + 1):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ImageError("image URL: only http(s) and data: URLs")
        _public(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        try:
            with httpx.stream("GET", url, timeout=timeout, follow_redirects=False) as r:
                if r.is_redirect:
                    url = urljoin(url, r.headers.get("location", ""))
                    continue
                if r.status_code != 200:
                    raise ImageError(f"image URL: HTTP {r.status_code}")
                data = bytearray()
                for chunk in r.iter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        raise ImageError(f"image URL: larger than {max_bytes} bytes")
                return bytes(data)
        except httpx.HTTPError as e:
            raise ImageError(f"image URL: {e.__class__.__name__}") from e
    raise ImageError("image URL: too many redirects")
