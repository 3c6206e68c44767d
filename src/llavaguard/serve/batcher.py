"""Dynamic batching: concurrent requests with equal jobs run as one engine batch.

One worker owns the model. It takes the oldest waiting request, waits up to ``max_wait_ms``
for more requests with an equal job (see ``jobs``: same policy, same decoding options) up to
``max_batch``, and runs them together in a thread so the event loop keeps accepting requests.
The queue is bounded: a full queue refuses new requests at once (the server answers 503 with
Retry-After) instead of growing without limit. A request whose caller gave up (timeout,
disconnect) is skipped. The batcher knows jobs only as hashable keys handed to ``run``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any


class QueueFull(Exception):
    """The server is at capacity; try again later."""


@dataclass
class _Waiting:
    """One request in the queue: its job (the grouping key), its payload, its caller."""

    job: Hashable
    payload: Any
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


Runner = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


class Batcher:
    """Groups waiting requests by job and runs each group with ``run(job, payloads)``."""

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
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="llavaguard-model")
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        return len(self._queue)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for waiting in self._queue:
            if not waiting.future.done():
                waiting.future.set_exception(QueueFull("the server is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, job: Hashable, payload: Any, timeout: float | None = None) -> Any:
        """The payload's result; QueueFull at capacity, TimeoutError past ``timeout`` seconds;
        an Exception that ``run`` returned or raised for it is raised here."""
        if len(self._queue) >= self.max_queue:
            raise QueueFull(f"{len(self._queue)} requests waiting")
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(job, payload, future))
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except (TimeoutError, asyncio.CancelledError):
            future.cancel()  # the worker skips it if it has not started
            raise

    def _take(self) -> list[_Waiting]:
        """Up to max_batch live requests sharing the oldest live request's job, in order."""
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
        """Wait for more requests with the oldest one's job, up to its deadline."""
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
        started = time.perf_counter()
        try:
            results = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.run, batch[0].job, [w.payload for w in batch]
            )
        except Exception as e:  # the whole batch failed: every caller hears why
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(e)
            return
        finally:
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - started)
        for waiting, result in zip(batch, results, strict=True):
            if not waiting.future.done():
                if isinstance(result, Exception):
                    waiting.future.set_exception(result)
                else:
                    waiting.future.set_result(result)
