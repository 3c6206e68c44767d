"""Dynamic batching: concurrent requests with the same key run as one engine batch.

One worker owns the model. It takes the oldest waiting job, waits up to ``max_wait_ms`` for
more jobs with the same key (same policy, same decoding options) up to ``max_batch``, and runs
them together in a thread so the event loop keeps accepting requests. The queue is bounded:
a full queue refuses new jobs at once (the server answers 503 with Retry-After) instead of
growing without limit. A job whose caller gave up (timeout, disconnect) is skipped.
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
class _Job:
    key: Hashable
    payload: Any
    future: asyncio.Future
    queued: float = field(default_factory=time.perf_counter)


Runner = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


class Batcher:
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
        self._jobs: deque[_Job] = deque()
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="llavaguard-model")
        self._task: asyncio.Task | None = None

    @property
    def depth(self) -> int:
        return len(self._jobs)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._work())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for job in self._jobs:
            if not job.future.done():
                job.future.set_exception(QueueFull("the server is shutting down"))
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, key: Hashable, payload: Any, timeout: float | None = None) -> Any:
        """The job's result; QueueFull at capacity, TimeoutError past ``timeout`` seconds."""
        if len(self._jobs) >= self.max_queue:
            raise QueueFull(f"{len(self._jobs)} requests waiting")
        future = asyncio.get_running_loop().create_future()
        self._jobs.append(_Job(key, payload, future))
        self._wake.set()
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except (TimeoutError, asyncio.CancelledError):
            future.cancel()  # the worker skips it if it has not started
            raise

    def _take(self) -> list[_Job]:
        """Up to max_batch live jobs sharing the oldest live job's key, in arrival order."""
        while self._jobs and self._jobs[0].future.done():
            self._jobs.popleft()
        if not self._jobs:
            return []
        key = self._jobs[0].key
        batch, rest = [], deque()
        while self._jobs:
            job = self._jobs.popleft()
            if job.future.done():
                continue
            if job.key == key and len(batch) < self.max_batch:
                batch.append(job)
            else:
                rest.append(job)
        self._jobs = rest
        return batch

    def _same_key_waiting(self) -> int:
        key = self._jobs[0].key
        return sum(1 for j in self._jobs if j.key == key and not j.future.done())

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._jobs:
                self._wake.clear()
                await self._wake.wait()
            # gather: wait for more jobs of the oldest one's key, up to the deadline
            deadline = self._jobs[0].queued + self.max_wait
            while self._jobs and self._same_key_waiting() < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), remaining)
                except TimeoutError:
                    break
            batch = self._take()
            if not batch:
                continue
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(
                    self._executor, self.run, batch[0].key, [j.payload for j in batch]
                )
            except Exception as e:  # the whole batch failed: every caller hears why
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            finally:
                if self.on_batch is not None:
                    self.on_batch(len(batch), time.perf_counter() - started)
            for job, result in zip(batch, results, strict=True):
                if not job.future.done():
                    if isinstance(result, Exception):
                        job.future.set_exception(result)
                    else:
                        job.future.set_result(result)
