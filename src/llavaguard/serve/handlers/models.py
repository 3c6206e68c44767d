"""GET /health and GET /v1/models: what is served, from the Guard the runtime holds."""

from __future__ import annotations

from llavaguard.serve.handlers.base import Handler
from llavaguard.serve.protocol.models import Health, ModelCard, ModelList


class ModelsHandler(Handler):
    def health(self) -> Health:
        engine = self.guard.engine
        return Health(model=engine.model_id, engine=engine.name, mode=self.guard.mode.value,
                      queue_depth=self.runtime.batcher.depth)  # fmt: skip

    def models(self) -> ModelList:
        return ModelList(data=[ModelCard(id=self.guard.engine.model_id)])
