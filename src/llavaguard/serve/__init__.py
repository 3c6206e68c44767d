"""The HTTP service: ``create_app`` builds it, ``serve`` runs it with uvicorn.

Flow: routes (``app``) parse and validate -> ``Service`` decodes images and resolves policies
-> ``Batcher`` groups concurrent requests -> the Guard's engine, one model in memory.
"""

from __future__ import annotations

from typing import Any

from llavaguard.serve.config import ServeConfig


def create_app(config: ServeConfig | None = None, guard: Any = None) -> Any:
    from llavaguard.serve.app import create_app as _create

    return _create(config, guard)


def serve(config: ServeConfig) -> None:
    """Load the model, then answer HTTP until interrupted."""
    import uvicorn

    uvicorn.run(create_app(config), host=config.host, port=config.port, log_level="info")


__all__ = ["ServeConfig", "create_app", "serve"]
