"""The app factory: one FastAPI app, a lifespan that owns the model, middleware, routes.

Routes: POST /v1/assess, /v1/chat/completions (the OpenAI subset the remote engine and the
official client need), /v1/moderations (OpenAI's shape, categories from the active policy),
GET /v1/models, /health, /metrics (Prometheus) and the OpenAPI document (/openapi.json,
/docs). Every error is ``{"error": {"message", "type", "code"}}``, OpenAI's shape.

Flow: ``routes`` -> a handler (``handlers``) checks the input -> ``Runtime.submit`` queues a
typed job (``jobs``) -> the ``Batcher`` runs equal jobs as one batch on the Guard.
"""

from __future__ import annotations

import gc
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from llavaguard import __version__
from llavaguard.serve.config import ServeConfig
from llavaguard.serve.disconnect import CancelOnDisconnect
from llavaguard.serve.edge import Edge
from llavaguard.serve.errors import install_error_handlers
from llavaguard.serve.handlers import Handlers
from llavaguard.serve.protocol import ErrorResponse
from llavaguard.serve.routes import router
from llavaguard.serve.runtime import Runtime

if TYPE_CHECKING:
    from llavaguard.guard import Guard


def create_app(config: ServeConfig | None = None, guard: Guard | None = None) -> FastAPI:
    """The ASGI app. ``guard`` is loaded from ``config`` at start-up unless given (and then
    closed at shutdown; a given one stays the caller's)."""
    config = config or ServeConfig()
    app = FastAPI(
        title="llavaguard",
        version=__version__,
        summary="Judge images against written safety policies with vision-language models.",
        lifespan=lifespan(config, guard),
        responses={k: {"model": ErrorResponse} for k in (400, 401, 408, 413, 503, 504)},
    )
    app.state.config = config
    install_middleware(app, config)
    app.add_middleware(CancelOnDisconnect)  # outermost: it reads the server's own receive
    install_error_handlers(app)
    app.include_router(router)
    return app


def lifespan(config: ServeConfig, guard: Guard | None):
    """Load the model before the first request (in a thread: the loop stays responsive) and
    give the batcher's queue an answer and the model back at shutdown."""

    @asynccontextmanager
    async def run(app: FastAPI):
        from llavaguard.guard import Guard

        g = guard if guard is not None else await run_in_threadpool(Guard.from_spec, config.guard)
        runtime = Runtime(config, g)
        runtime.start()
        app.state.runtime = runtime
        app.state.handlers = Handlers.build(runtime)
        # The model and libraries are half a million objects: a full garbage collection walks
        # them all with the GIL held (about 250 ms here), a pause every request feels (a
        # /health probe took 602 ms). Frozen, collections walk only what requests allocate.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            await runtime.stop()
            if guard is None:
                g.close()

    return run


def install_middleware(app: FastAPI, config: ServeConfig) -> None:
    """The edge (``serve.edge``): keys, body size and body time checked as the request
    arrives, and every request counted by route and status, refusals included."""
    app.add_middleware(Edge, config=config)
