"""POST /v1/assess: read the image and the policy (JSON or multipart), judge, answer.

The handler accepts both bodies itself, so the route declares no body parameter; the
moderation handler reuses ``judge`` so both endpoints batch together under one policy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from llavaguard.serve.errors import ApiError, loads, parse
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
        body = parse(AssessRequest, loads(raw))
        if (body.image is None) == (body.image_url is None):
            raise ApiError(400, "give exactly one of 'image' (base64) and 'image_url'")
        policy = self.policy(body.policy, body.allow, body.sensitive)
        image = await self.image(b64=body.image, url=body.image_url)
        return image, policy, body.id or "image"

    async def _from_form(self, form: FormData) -> Inputs:
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "multipart upload needs a file field 'image'")
        policy = self.policy(_policy_field(_text(form, "policy")), _text(form, "allow"),
                             _text(form, "sensitive"))  # fmt: skip
        image = await self.image(data=await upload.read())
        return image, policy, str(_text(form, "id") or upload.filename or "image")


def _text(form: FormData, name: str) -> str | None:
    """A text form field; ApiError 400 when a file was sent where text belongs."""
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"{name}: expected a text field, got a file")
    return value


def _policy_field(value: str | None) -> Any:
    """A form field holds a policy name, or a custom policy as JSON text."""
    if value is not None and value.lstrip().startswith("{"):
        return loads(value, "policy")
    return value or None
