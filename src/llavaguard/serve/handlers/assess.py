"""POST /v1/assess: read the image and the policy (JSON or multipart), judge, answer.

The handler accepts both bodies itself, so the route declares no body parameter; the
moderation handler reuses ``judge`` so both endpoints batch together under one policy. A
custom policy is remembered (a bounded cache) only once a request with it has succeeded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool

from llavaguard.errors import ConfigError, PolicyError
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

# the image's file bytes, the policy, the key to remember a custom policy by, the image's id
Inputs = tuple[bytes, "Policy", str | None, str]


class AssessHandler(Handler):
    async def create(self, request: Request) -> Assessment:
        """Judge one image against a policy (the server's default, a built-in one by name, or
        a custom one), with exceptions declared allowed or sensitive."""
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            data, policy, key, image_id = await self._from_form(await request.form())
        else:
            data, policy, key, image_id = await self._from_json(await request.body())
        async with self.images([data]) as images:
            (assessment,) = await self.judge(images, policy, [image_id])
        self.remember(key, policy)  # only now: a failed request leaves nothing behind
        return assessment

    async def judge(
        self, images: list[Image.Image], policy: Policy, ids: list[str]
    ) -> list[Assessment]:
        """Images through the batcher, admitted together; the policy's answer grammar is
        compiled first, in a worker thread. ApiError 502 when the model failed on one."""
        try:
            self.guard.check_calibrated(policy)
            prepared = await run_in_threadpool(self.guard.prepare, policy)
        except (ConfigError, PolicyError) as e:
            raise ApiError(400, str(e)) from None
        job = AssessJob(policy, prepared)
        return await self.runtime.submit_many([(job, p) for p in zip(ids, images, strict=True)])

    async def _from_json(self, raw: bytes) -> Inputs:
        # parsed in a worker thread: a body of many megabytes would hold up the event loop
        body = parse(AssessRequest, await run_in_threadpool(loads, raw))
        if (body.image is None) == (body.image_url is None):
            raise ApiError(400, "give exactly one of 'image' (base64) and 'image_url'")
        policy, key = await self.policy(body.policy, body.allow, body.sensitive)
        image = await self.image_bytes(b64=body.image, url=body.image_url)
        return image, policy, key, body.id or "image"

    async def _from_form(self, form: FormData) -> Inputs:
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "multipart upload needs a file field 'image'")
        policy, key = await self.policy(_policy_field(_text(form, "policy")),
                                        _text(form, "allow"), _text(form, "sensitive"))  # fmt: skip
        image = await self.image_bytes(data=await upload.read())
        return image, policy, key, str(_text(form, "id") or upload.filename or "image")


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
