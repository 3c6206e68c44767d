"""Dynamic batching: concurrent requests with equal jobs run as one engine batch.

One worker owns the model. It takes the oldest waiting job, waits up to ``max_wait_ms`` for
more with an equal key (see ``jobs``: same policy, same decoding options) up to ``max_batch``,
and runs them together in the model thread so the event loop keeps accepting requests.

The queue is bounded, and a request is admitted whole or not at all: ``submit_many`` queues
all of a request's jobs (a moderation request's images) at once, or refuses them all at once
when they do not fit (the server answers 503 with Retry-After) instead of growing without
limit. A request that fails, times out or whose client went away takes its queued jobs with
it; a batch already running cannot be interrupted mid-forward, but no new work starts for
it. The batcher knows jobs only as hashable keys handed to ``run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The server is at capacity; try again later."""


@dataclass(eq=False)
class _Waiting:
    """One job in the queue: its key (the grouping key), its payload, its caller."""

    job: Hashable
    payload: Any
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)
    request: list[_Waiting] = field(default_factory=list)  # its request's jobs, itself too

    def fail(self, error: BaseException) -> None:
        """This job failed: so has its request, whose other jobs are cancelled right away
        (before the worker takes its next batch)."""
        if not self.future.done():
            self.future.set_exception(error)
        for other in self.request:
            if not other.future.done():
                other.future.cancel()


Runner = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


class ModelThread:
    """The one thread that runs the model, one call at a time.

    A daemon thread, not a ThreadPoolExecutor: an executor's threads are joined when the
    interpreter exits, so a forward pass that takes minutes would keep a stopped server alive
    that long. A call still running at exit is abandoned with the process.
    """

    def __init__(self, name: str = "llavaguard-model") -> None:
        self._calls: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def call(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future:
        """``fn(*args)`` in the model thread, as a future of the running loop."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._calls.put((loop, future, fn, args))
        return future

    def stop(self) -> None:
        """No further calls; the one running, if any, ends on its own."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            loop, future, fn, args = call
            try:
                outcome: tuple[Any, BaseException | None] = (fn(*args), None)
            except BaseException as e:  # handed to the caller, whatever it is
                outcome = (None, e)
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, future, *outcome)


def _settle(future: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if future.done():  # cancelled while it ran
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


class Batcher:
    """Groups waiting jobs by key and runs each group with ``run(job, payloads)``."""

    def __init__(
        self,
        run: Runner,
        *,
        max_batch: int = 8,
        max_wait_ms: float = 10.0,
        max_queue: int = 64,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        self.run = run
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_batch = on_batch
        self._queue: deque[_Waiting] = deque()
        self._wake = asyncio.Event()
        self._model: ModelThread | None = None
        self._task: asyncio.Task | None = None
        self._running: list[_Waiting] = []
        self._stopping = False

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._model = ModelThread()
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        """Refuse new work, fail every queued job (its caller hears "shutting down") and
        let the model thread go; a batch that is running is not waited for."""
        self._stopping = True
        running = self._running  # the batch in the model thread, if any: its callers too
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for waiting in [*running, *self._queue]:
            if not waiting.future.done():
                waiting.future.set_exception(QueueFull("the server is shutting down"))
        self._queue.clear()
        if self._model is not None:
            self._model.stop()

    async def submit(self, job: Hashable, payload: Any, timeout: float | None = None) -> Any:
        """The payload's result; see ``submit_many``."""
        return (await self.submit_many([(job, payload)], timeout))[0]

    async def submit_many(
        self, work: Sequence[tuple[Hashable, Any]], timeout: float | None = None
    ) -> list[Any]:
        """The results of one request's jobs, in order, all admitted at once or none.

        QueueFull when they do not all fit (a request larger than the whole queue is still
        admitted into an empty one), TimeoutError past ``timeout`` seconds; the first
        Exception that ``run`` returned or raised for one of them is raised here. Whichever
        way it ends early (a failure, the timeout, the caller cancelled), the request's jobs
        that have not started are taken out of the queue.
        """
        if self._stopping:
            raise QueueFull("the server is shutting down")
        if self._queue and len(self._queue) + len(work) > self.max_queue:
            raise QueueFull(f"{len(self._queue)} jobs waiting")
        loop = asyncio.get_running_loop()
        entries = [_Waiting(job, payload, loop.create_future()) for job, payload in work]
        for waiting in entries:
            waiting.request = entries
        self._queue.extend(entries)
        self._wake.set()
        try:
            return await asyncio.wait_for(_all(entries), timeout)
        finally:
            self._drop(entries)

    def _drop(self, entries: list[_Waiting]) -> None:
        """Cancel what is left of a finished request, and free its places in the queue."""
        for waiting in entries:
            if not waiting.future.done():
                waiting.future.cancel()
            elif not waiting.future.cancelled():
                waiting.future.exception()  # seen: asyncio logs no "never retrieved"
        mine = {id(w) for w in entries}
        if any(id(w) in mine for w in self._queue):
            self._queue = deque(w for w in self._queue if id(w) not in mine)

    def _take(self) -> list[_Waiting]:
        """Up to max_batch live jobs sharing the oldest live job's key, in order."""
        while self._queue and self._queue[0].future.done():
            self._queue.popleft()
        if not self._queue:
            return []
        job = self._queue[0].job
        batch, rest = [], deque()
        while self._queue:
            waiting = self._queue.popleft()
            if waiting.future.done():
                continue
            if waiting.job == job and len(batch) < self.max_batch:
                batch.append(waiting)
            else:
                rest.append(waiting)
        self._queue = rest
        return batch

    def _same_job_waiting(self) -> int:
        job = self._queue[0].job
        return sum(1 for w in self._queue if w.job == job and not w.future.done())

    async def _work(self) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            await self._gather()
            batch = self._take()
            if batch:
                await self._run(batch)

    async def _gather(self) -> None:
        """Wait for more jobs with the oldest one's key, up to its deadline."""
        deadline = self._queue[0].queued + self.max_wait
        while self._queue and self._same_job_waiting() < self.max_batch:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    async def _run(self, batch: list[_Waiting]) -> None:
        """Run one batch in the model thread and hand each caller its result."""
        assert self._model is not None, "start() the batcher first"
        started = time.perf_counter()
        self._running = batch
        try:
            call = self._model.call(self.run, batch[0].job, [w.payload for w in batch])
            results = await call
        except Exception as e:  # the whole batch failed: every caller hears why
            for waiting in batch:
                waiting.fail(e)
            return
        finally:
            self._running = []
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - started)
        for waiting, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                waiting.fail(result)
            elif not waiting.future.done():
                waiting.future.set_result(result)


async def _all(entries: list[_Waiting]) -> list[Any]:
    """Every entry's result, or the first failure (in order) as soon as there is one."""
    futures = [w.future for w in entries]
    await asyncio.wait(futures, return_when=asyncio.FIRST_EXCEPTION)
    for future in futures:
        if future.done() and not future.cancelled() and future.exception() is not None:
            raise future.exception()  # type: ignore[misc]
    return [future.result() for future in futures]
