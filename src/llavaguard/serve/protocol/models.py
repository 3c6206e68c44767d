"""GET /v1/models (OpenAI's list of one served model) and GET /health (for probes)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    owned_by: str = "llavaguard"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    engine: str
    mode: str
    queue_depth: int
