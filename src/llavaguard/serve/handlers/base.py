"""What the endpoint handlers share (vLLM's ``OpenAIServing``): the runtime, and turning a
request's image and policy into a decoded image and a ``Policy`` with client-facing errors.

Inputs are checked here, before anything is queued, so a bad request costs the model nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from llavaguard.errors import ConfigError, ImageError, PolicyError
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

    async def image(
        self, data: bytes | None = None, url: str | None = None, b64: str | None = None
    ) -> Image.Image:
        """A decoded RGB image from bytes, a URL or base64 text; ApiError 400 saying why not.
        Decoding and fetching run in a worker thread: the event loop keeps serving."""
        from llavaguard.inputs.images import load_image

        try:
            if b64 is not None:
                data = decode_base64(b64)
            elif url is not None:
                data = await self._fetch(url)
            if data is None:
                raise ImageError("no image given")
            return await run_in_threadpool(load_image, data, limits=self.limits, name="image")
        except ImageError as e:
            raise ApiError(400, str(e)) from None

    async def _fetch(self, url: str) -> bytes:
        if url.startswith("data:"):
            return decode_data_url(url)
        if not self.config.allow_image_urls:
            raise ImageError("image URLs are not fetched by this server; send the image")
        return await run_in_threadpool(fetch, url, self.limits.max_bytes)

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
            return base.with_states(allow=allow, sensitive=sensitive)
        except (PolicyError, ConfigError) as e:
            raise ApiError(400, str(e)) from None
