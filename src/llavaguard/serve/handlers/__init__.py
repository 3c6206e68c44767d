"""One handler per endpoint group; each owns its endpoint's work (decode and check the
input, submit typed jobs to the runtime, build the response) so routes stay a few lines."""

from __future__ import annotations

from dataclasses import dataclass

from llavaguard.serve.handlers.assess import AssessHandler
from llavaguard.serve.handlers.chat import ChatHandler
from llavaguard.serve.handlers.models import ModelsHandler
from llavaguard.serve.handlers.moderation import ModerationHandler
from llavaguard.serve.runtime import Runtime


@dataclass(frozen=True)
class Handlers:
    """The app's handlers, built once the model is loaded (``app.state.handlers``)."""

    assess: AssessHandler
    chat: ChatHandler
    moderation: ModerationHandler
    models: ModelsHandler

    @classmethod
    def build(cls, runtime: Runtime) -> Handlers:
        assess = AssessHandler(runtime)
        return cls(
            assess=assess,
            chat=ChatHandler(runtime),
            moderation=ModerationHandler(runtime, assess),
            models=ModelsHandler(runtime),
        )


__all__ = ["AssessHandler", "ChatHandler", "Handlers", "ModelsHandler", "ModerationHandler"]
