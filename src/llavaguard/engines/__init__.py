"""Engines run models. A registry of names keeps callers from knowing which one they hold."""

from __future__ import annotations

import importlib
from typing import Any

from llavaguard.engines.base import (
    MODEL_CARD_RECIPE,
    Engine,
    GenerationConfig,
    VisionRequest,
    generate_isolated,
)
from llavaguard.errors import ConfigError

# name -> "module:Class"; modules are imported only when the engine is asked for.
ENGINES: dict[str, str] = {
    "transformers": "llavaguard.engines.transformers:TransformersEngine",
    "openai": "llavaguard.engines.openai:OpenAIEngine",
}


def engine_class(name: str) -> type[Engine]:
    try:
        module, cls = ENGINES[name].split(":")
    except KeyError:
        valid = ", ".join(sorted(ENGINES))
        raise ConfigError(f"unknown engine {name!r} (valid: {valid})") from None
    return getattr(importlib.import_module(module), cls)


def load_engine(name: str, model: str, **options: Any) -> Engine:
    """Build the named engine for a model; options are the engine's own keyword arguments."""
    return engine_class(name)(model, **options)


__all__ = [
    "ENGINES",
    "MODEL_CARD_RECIPE",
    "Engine",
    "GenerationConfig",
    "VisionRequest",
    "engine_class",
    "generate_isolated",
    "load_engine",
]
