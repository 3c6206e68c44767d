"""What the endpoint handlers share (vLLM's ``OpenAIServing``): the runtime, and turning a
request's images and policy into decoded images and a ``Policy`` with client-facing errors.

Inputs are checked here, before anything is queued, so a bad request costs the model nothing.
Whatever grows with the input (decoding an image, rendering a custom policy, compiling its
answer grammar) runs in a worker thread, so the event loop keeps answering everyone else, and
within limits: image parts per request, decoded image memory per request and per server,
the size of a custom policy.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from llavaguard.errors import ConfigError, ImageError, PolicyError
from llavaguard.serve.budget import OverBudget
from llavaguard.serve.errors import ApiError
from llavaguard.serve.urls import decode_base64, decode_data_url, fetch

if TYPE_CHECKING:
    from PIL import Image

    from llavaguard.policy import Policy
    from llavaguard.serve.runtime import Runtime


class Handler:
    def __init__(self, runtime: Runtime) -> None:
        from llavaguard.inputs.images import ImageLimits

        self.runtime = runtime
        self.config = runtime.config
        self.guard = runtime.guard
        self.limits = ImageLimits(
            max_bytes=int(self.config.max_body_mb * 1024 * 1024),
            max_pixels=self.config.max_image_pixels,
        )

    # ---- images ------------------------------------------------------------------------
    async def image_bytes(
        self, data: bytes | None = None, url: str | None = None, b64: str | None = None
    ) -> bytes:
        """An image's file bytes from bytes, a URL or base64 text; ApiError 400 saying why
        not. Nothing is decoded yet: see ``images``."""
        try:
            if b64 is not None:
                data = decode_base64(b64)
            elif url is not None:
                data = await self._fetch(url)
            if data is None:
                raise ImageError("no image given")
            return data
        except ImageError as e:
            raise ApiError(400, str(e)) from None

    def check_parts(self, count: int) -> None:
        """ApiError 400 for more image parts than one request may have."""
        if count > self.config.max_image_parts:
            raise ApiError(400, f"{count} images in one request; this server takes at most "
                           f"{self.config.max_image_parts}")  # fmt: skip

    @asynccontextmanager
    async def images(self, files: Sequence[bytes]) -> AsyncIterator[list[Image.Image]]:
        """The decoded RGB images of one request, held within the memory budgets while the
        block runs: what they take decoded is read from their headers first, and the request
        is refused whole (413 over the request's budget, 503 over what the server has left)
        before a pixel is decoded. Decoding runs in a worker thread."""
        from llavaguard.inputs.images import decoded_bytes, load_image

        self.check_parts(len(files))
        if not files:
            yield []
            return
        try:
            sizes = await run_in_threadpool(
                lambda: [decoded_bytes(f, limits=self.limits, name="image") for f in files]
            )
        except ImageError as e:
            raise ApiError(400, str(e)) from None
        need, most = sum(sizes), int(self.config.max_request_image_mb * 2**20)
        if need > most:
            raise ApiError(413, f"images would take {need / 2**20:.0f} MB decoded; this server "
                           f"takes at most {most / 2**20:.0f} MB a request",
                           "request_too_large")  # fmt: skip
        try:
            self.runtime.image_memory.take(need)
        except OverBudget as e:
            raise ApiError(503, f"server busy: {e}; retry shortly", "server_busy") from None
        try:
            decoded = []
            for f in files:
                decoded.append(await run_in_threadpool(load_image, f, limits=self.limits,
                                                       name="image"))  # fmt: skip
            yield decoded
        except ImageError as e:
            raise ApiError(400, str(e)) from None
        finally:
            self.runtime.image_memory.give(need)

    async def _fetch(self, url: str) -> bytes:
        if url.startswith("data:"):
            return decode_data_url(url)
        if not self.config.allow_image_urls:
            raise ImageError("image URLs are not fetched by this server; send the image")
        return await run_in_threadpool(fetch, url, self.limits.max_bytes)

    # ---- policies ----------------------------------------------------------------------
    async def policy(
        self, spec: Any = None, allow: Any = None, sensitive: Any = None
    ) -> tuple[Policy, str | None]:
        """The default policy, a built-in one by name, or a custom one given as data, and the
        key to ``remember`` a custom one by once its request has succeeded (None for the
        others). Never a file path: a request must not make the server read its own files.
        A custom policy is checked against the size limits, then rendered in a worker thread
        (rendering grows with its size), unless an equal one is remembered."""
        from llavaguard.policy import Policy, list_builtin

        try:
            if isinstance(spec, dict):
                self._check_categories(spec)
                return await run_in_threadpool(self._custom_policy, spec, allow, sensitive)
            if spec is None:
                base = self.guard.policy
            elif isinstance(spec, str) and spec in list_builtin():
                base = Policy.load(spec)
            else:
                raise PolicyError(
                    f"unknown policy {spec!r} (built-in: {', '.join(list_builtin())}; or send "
                    "a custom policy object)"
                )
            return base.with_states(allow=allow, sensitive=sensitive), None
        except (PolicyError, ConfigError) as e:
            raise ApiError(400, str(e)) from None

    def remember(self, key: str | None, policy: Policy) -> None:
        """Keep a custom policy whose request succeeded (at most ``POLICY_CACHE_SIZE``)."""
        if key is not None:
            self.runtime.policies.put(key, policy)

    def _check_categories(self, spec: dict[str, Any]) -> None:
        most = self.config.max_policy_categories
        categories = spec.get("categories")
        if isinstance(categories, list) and len(categories) > most:
            raise PolicyError(f"policy: {len(categories)} categories; this server takes at "
                              f"most {most}")  # fmt: skip

    def _custom_policy(
        self, spec: dict[str, Any], allow: Any, sensitive: Any
    ) -> tuple[Policy, str]:
        """In a worker thread: the policy, rendered (its text and id computed here)."""
        from llavaguard.policy import Policy

        try:
            text = json.dumps(spec, separators=(",", ":"))
        except RecursionError:
            raise PolicyError("policy: nested too deeply") from None
        most = int(self.config.max_policy_kb * 1024)
        if len(text.encode()) > most:
            raise PolicyError(f"policy: {len(text.encode())} bytes of JSON; this server takes "
                              f"at most {most}")  # fmt: skip
        key = hashlib.sha256(json.dumps([text, allow, sensitive]).encode()).hexdigest()
        policy = self.runtime.policies.get(key)
        if policy is None:
            policy = Policy.from_data(spec).with_states(allow=allow, sensitive=sensitive)
            _ = policy.id  # renders the text too: here, not on the event loop
        return policy, key
