"""The HTTP service: ``create_app`` builds it, ``serve`` runs it with uvicorn.

Laid out like vLLM's OpenAI-compatible server: ``protocol`` (request and response models, one
module per endpoint group) -> thin ``routes`` -> one handler per endpoint (``handlers``: decode
and check the input, build the answer) -> ``Runtime.submit`` with a typed job (``jobs``) ->
the ``Batcher`` runs equal jobs as one batch on the Guard, one model in memory. ``app`` is the
factory with the lifespan; ``errors`` the one error shape; ``edge`` checks key, body size and
body time before a route runs; ``connections`` times out slow and idle connections.
Importing this package loads none of that (nor FastAPI): ``create_app`` imports it when
called.
"""

from __future__ import annotations

from typing import Any

from llavaguard.serve.config import ServeConfig


def create_app(config: ServeConfig | None = None, guard: Any = None) -> Any:
    from llavaguard.serve.app import create_app as _create

    return _create(config, guard)


def serve(config: ServeConfig) -> None:
    """Load the model, then answer HTTP until interrupted, with the connection timeouts of
    ``config`` (``connections``: a deadline for each request's head, idle keep-alive).

    On SIGTERM the requests waiting for the model are answered 503 at once (as is the one
    whose batch is running: a forward pass cannot be interrupted, and is not waited for),
    the others get ``shutdown_timeout`` seconds to finish and are then cancelled.
    """
    import uvicorn

    from llavaguard.serve.connections import timed_protocol

    app = create_app(config)

    class Server(uvicorn.Server):
        async def shutdown(self, sockets: Any = None) -> None:
            runtime = getattr(app.state, "runtime", None)
            if runtime is not None:
                await runtime.stop()
            await super().shutdown(sockets)

    settings = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        log_level="info",
        http=timed_protocol(config.header_timeout),
        timeout_keep_alive=config.keep_alive_timeout,  # type: ignore[arg-type]
        timeout_graceful_shutdown=config.shutdown_timeout,  # type: ignore[arg-type]
    )
    Server(settings).run()


__all__ = ["ServeConfig", "create_app", "serve"]
