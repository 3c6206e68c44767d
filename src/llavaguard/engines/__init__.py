"""Engines run models. A registry of names keeps callers from knowing which one they hold.

Building an engine from options is the Guard spec's job (``llavaguard.guard.spec``); this
package only says which engines exist and what each of them declares.
"""

from __future__ import annotations

from llavaguard.engines.base import (
    MODEL_CARD_RECIPE,
    Capabilities,
    Engine,
    EngineOptions,
    GenerationConfig,
    Scored,
    ScoreKind,
    VisionRequest,
    generate_isolated,
)
from llavaguard.registry import Registry

# modules are imported only when the engine is asked for
ENGINES: Registry[type[Engine]] = Registry(
    "engine",
    {
        "openai": "llavaguard.engines.openai:OpenAIEngine",
        "transformers": "llavaguard.engines.transformers:TransformersEngine",
        "vllm": "llavaguard.engines.vllm:VLLMEngine",
    },
)


def engine_class(name: str) -> type[Engine]:
    return ENGINES.get(name)


__all__ = [
    "ENGINES",
    "MODEL_CARD_RECIPE",
    "Capabilities",
    "Engine",
    "EngineOptions",
    "GenerationConfig",
    "ScoreKind",
    "Scored",
    "VisionRequest",
    "engine_class",
    "generate_isolated",
]
