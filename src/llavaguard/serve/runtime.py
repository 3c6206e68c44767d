"""What every handler shares: the Guard (one model in memory), its batcher and the metrics.

vLLM's handlers share an engine client; ours share a ``Runtime``. It is the only way to the
model: a handler submits a typed job with its payload and awaits the answer, and the runtime
turns a full queue, a timeout or an engine failure into the client's error. It knows nothing
about endpoints or request shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from llavaguard.errors import EngineError
from llavaguard.lru import LRU
from llavaguard.serve.batcher import Batcher, QueueFull
from llavaguard.serve.budget import MemoryBudget
from llavaguard.serve.errors import ApiError
from llavaguard.serve.metrics import Metrics

if TYPE_CHECKING:
    from llavaguard.guard import Guard
    from llavaguard.policy import Policy
    from llavaguard.serve.config import ServeConfig
    from llavaguard.serve.jobs import Job


POLICY_CACHE_SIZE = 32


class Runtime:
    def __init__(self, config: ServeConfig, guard: Guard) -> None:
        self.config = config
        self.guard = guard
        self.metrics = Metrics()
        self.batcher = Batcher(
            self._run,
            max_batch=config.max_batch_size,
            max_wait_ms=config.max_wait_ms,
            max_queue=config.max_queue,
            on_batch=self.metrics.batch,
        )
        self.metrics.queue_depth.set_function(lambda: self.batcher.depth)
        self.image_memory = MemoryBudget(int(config.max_image_memory_mb * 2**20))
        self.metrics.image_memory.set_function(lambda: self.image_memory.used)
        # custom policies rendered for requests that succeeded, by their JSON
        self.policies: LRU[Policy] = LRU(POLICY_CACHE_SIZE)

    def start(self) -> None:
        self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()

    def _run(self, job: Job, payloads: Sequence[Any]) -> Sequence[Any]:
        """In the model thread: one batch of equal jobs."""
        return job.run(self.guard, payloads)

    async def submit(self, job: Job, payload: Any) -> Any:
        """The answer to one payload; see ``submit_many``."""
        return (await self.submit_many([(job, payload)]))[0]

    async def submit_many(self, work: Sequence[tuple[Job, Any]]) -> list[Any]:
        """The answers to one request's payloads, each batched with others of an equal job,
        admitted all at once or not at all; ApiError 503 when the queue cannot take them all,
        504 past the request timeout, 502 when the engine failed on one (the request's other
        jobs are then dropped from the queue)."""
        timeout = self.config.request_timeout
        try:
            return await self.batcher.submit_many(work, timeout)
        except QueueFull as e:
            raise ApiError(503, f"server busy: {e}; retry shortly", "server_busy") from None
        except TimeoutError:
            raise ApiError(504, f"no answer within {timeout:g} s", "timeout") from None
        except EngineError as e:
            raise ApiError(502, str(e), "engine_error") from None
