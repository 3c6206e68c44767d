"""POST /v1/assess: read the image and the policy (JSON or multipart), judge, answer.

The handler accepts both bodies itself, so the route declares no body parameter; the
moderation handler reuses ``judge`` so both endpoints batch together under one policy.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from llavaguard.serve.errors import ApiError, parse
from llavaguard.serve.handlers.base import Handler
from llavaguard.serve.jobs import AssessJob
from llavaguard.serve.protocol.assess import AssessRequest

if TYPE_CHECKING:
    from PIL import Image
    from starlette.datastructures import FormData
    from starlette.requests import Request

    from llavaguard.guard import Assessment
    from llavaguard.policy import Policy

Inputs = tuple["Image.Image", "Policy", str]  # the image, the policy, the image's id


class AssessHandler(Handler):
    async def create(self, request: Request) -> Assessment:
        """Judge one image against a policy (the server's default, a built-in one by name, or
        a custom one), with exceptions declared allowed or sensitive."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            image, policy, image_id = await self._from_form(await request.form())
        else:
            image, policy, image_id = await self._from_json(await request.body())
        return await self.judge(image, policy, image_id)

    async def judge(self, image: Image.Image, policy: Policy, image_id: str) -> Assessment:
        """One image through the batcher; ApiError 502 when the model never answered."""
        a = await self.runtime.submit(AssessJob(policy), (image_id, image))
        if a.failed:
            raise ApiError(502, f"the model failed on this image: {a.error}", "engine_error")
        return a

    async def _from_json(self, raw: bytes) -> Inputs:
        try:
            data = json.loads(raw)
        except ValueError:
            raise ApiError(400, "the body is not valid JSON") from None
        body = parse(AssessRequest, data)
        if (body.image is None) == (body.image_url is None):
            raise ApiError(400, "give exactly one of 'image' (base64) and 'image_url'")
        policy = self.policy(body.policy, body.allow, body.sensitive)
        image = await self.image(b64=body.image, url=body.image_url)
        return image, policy, body.id or "image"

    async def _from_form(self, form: FormData) -> Inputs:
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "multipart upload needs a file field 'image'")
        policy = self.policy(_policy_field(form.get("policy")), form.get("allow"),
                             form.get("sensitive"))  # fmt: skip
        image = await self.image(data=await upload.read())
        return image, policy, str(form.get("id") or upload.filename or "image")


def _policy_field(value: Any) -> Any:
    """A form field holds a policy name, or a custom policy as JSON text."""
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except ValueError:
            raise ApiError(400, "policy: invalid JSON") from None
    return value or None
