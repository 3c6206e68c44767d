"""POST /v1/assess: one image judged against a policy, as JSON or as a multipart upload.

The answer is the ``Assessment`` record ``llavaguard assess`` writes.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class AssessRequest(BaseModel):
    """JSON body of POST /v1/assess (a multipart upload takes the same fields as form fields,
    with the image as the file field ``image``)."""

    model_config = ConfigDict(extra="forbid")

    image: str | None = Field(None, description="The image, base64 or a base64 data: URL.")
    image_url: str | None = Field(None, description="Or an http(s) URL, when the server allows.")
    id: str | None = Field(None, description="Your id for the image, echoed as `image`.")
    policy: str | dict[str, Any] | None = Field(
        None, description="Built-in policy name, or a custom policy (the YAML file's shape)."
    )
    allow: list[str] | str | None = Field(None, description="Codes declared allowed.")
    sensitive: list[str] | str | None = Field(None, description="Codes declared sensitive.")


MULTIPART_FIELDS = ("id", "policy", "allow", "sensitive")


def assess_request_body() -> dict[str, Any]:
    """The OpenAPI request body: the route reads the body itself (JSON or multipart), so
    FastAPI cannot infer it from a parameter."""
    multipart = {
        "type": "object",
        "properties": {
            "image": {"type": "string", "format": "binary"},
            **{name: {"type": "string"} for name in MULTIPART_FIELDS},
        },
        "required": ["image"],
    }
    return {
        "requestBody": {
            "content": {
                "application/json": {"schema": AssessRequest.model_json_schema()},
                "multipart/form-data": {"schema": multipart},
            },
            "required": True,
        }
    }
