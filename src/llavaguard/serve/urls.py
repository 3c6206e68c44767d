"""Images named by URL: ``data:`` URLs always, http(s) only when enabled, and then never
from private, loopback, link-local or otherwise internal addresses (no SSRF): not directly,
not through an IPv6 form that embeds one, not through a redirect, and not through a name that
resolves differently the second time (the connection goes to the address that was checked)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
from typing import Any
from urllib.parse import urljoin, urlsplit, urlunsplit

from llavaguard.errors import ImageError

MAX_REDIRECTS = 3
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


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


# IPv6 forms that carry an IPv4 address in their last 32 bits, which is where the packets go
LAST_32_BITS = tuple(
    ipaddress.IPv6Network(n)
    for n in (
        "64:ff9b::/96",  # NAT64, well-known prefix (RFC 6052)
        "::/96",  # IPv4-compatible (deprecated, still routed by some stacks)
        "::ffff:0:0:0/96",  # SIIT, IPv4-translated (RFC 2765)
    )
)
LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")  # local-use NAT64 (RFC 8215): internal


def embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address leads to: mapped, 6to4, Teredo (server and
    client), NAT64, IPv4-compatible and SIIT forms."""
    if ip.version == 4:
        return []
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    found += list(ip.teredo or ())
    if any(ip in net for net in LAST_32_BITS):
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def refusal(ip: IPAddress) -> str | None:
    """Why an image must not be fetched from ``ip`` (private, loopback, link-local,
    multicast or otherwise internal, itself or the IPv4 address it embeds), or None."""
    if ip.version == 6 and ip in LOCAL_NAT64:
        return "a local-use NAT64 address"
    for address in (ip, *embedded_ipv4(ip)):
        if not address.is_global or address.is_multicast:
            return "a private or internal address"
    return None


def resolve(host: str, port: int) -> IPAddress:
    """The one address to connect to: every address ``host`` resolves to is checked (any
    internal one refuses the URL), then the first is used for the connection itself, so a
    second lookup cannot answer differently (DNS rebinding)."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise ImageError(f"image URL: cannot resolve {host}") from None
    addresses = [ipaddress.ip_address(info[4][0].partition("%")[0]) for info in infos]
    for ip in addresses:
        if (why := refusal(ip)) is not None:
            raise ImageError(f"image URL: {host} is {why}; refused")
    if not addresses:
        raise ImageError(f"image URL: cannot resolve {host}")
    return addresses[0]


def pinned(url: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """``url`` with its host replaced by the checked address, and the Host header and TLS
    server name (SNI, also the name the certificate must match) that keep the original."""
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:  # a port out of range, a broken IPv6 literal
        raise ImageError(f"image URL: invalid ({e})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImageError("image URL: only http(s) and data: URLs")
    if not parts.netloc.isascii():
        raise ImageError("image URL: write a non-ASCII host name in its xn-- (IDNA) form")
    ip = resolve(parts.hostname, port)
    host = f"[{ip}]" if ip.version == 6 else str(ip)
    userinfo, at, original = parts.netloc.rpartition("@")
    target = urlunsplit(parts._replace(netloc=f"{userinfo}{at}{host}:{port}"))
    tls = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return target, {"Host": original}, tls


def fetch(url: str, max_bytes: int, timeout: float = 10.0) -> bytes:
    """GET an http(s) image from checked addresses only (redirects too), connecting to the
    address that was checked."""
    import httpx

    with httpx.Client(timeout=timeout, follow_redirects=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            target, headers, extensions = pinned(url)
            try:
                with client.stream("GET", target, headers=headers, extensions=extensions) as r:
                    if r.is_redirect:
                        url = urljoin(url, r.headers.get("location", ""))
                        continue
                    return _read(r, max_bytes)
            except (httpx.HTTPError, httpx.InvalidURL) as e:
                raise ImageError(f"image URL: {e.__class__.__name__}") from None
    raise ImageError("image URL: too many redirects")


def _read(r: Any, max_bytes: int) -> bytes:
    if r.status_code != 200:
        raise ImageError(f"image URL: HTTP {r.status_code}")
    data = bytearray()
    for chunk in r.iter_bytes():
        data += chunk
        if len(data) > max_bytes:
            raise ImageError(f"image URL: larger than {max_bytes} bytes")
    return bytes(data)
