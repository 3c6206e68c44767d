"""The local executor: reader threads prepare items ahead, this process runs the batches."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from typing import Any

from llavaguard.pipeline.executor import Batches, Executor, RunStats


def ahead(fn: Callable[[Any], Any], items: Iterable[Any], workers: int, window: int) -> Iterator:
    """``fn`` of each item, by a thread pool, in order, at most ``window`` in flight."""
    with ThreadPoolExecutor(workers, thread_name_prefix="llavaguard-read") as pool:
        pending: list[Any] = []
        it = iter(items)
        for item in islice(it, window):
            pending.append(pool.submit(fn, item))
        while pending:
            done = pending.pop(0).result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(fn, nxt))
            yield done


def batches(it: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(it)
    while batch := list(islice(it, size)):
        yield batch


class LocalExecutor(Executor):
    """``workers`` threads run ``step.prepare`` up to four batches ahead of the step. The step
    is set up at the first batch (a finished run loads nothing) and closed at the end."""

    def __init__(self, *args: Any, workers: int = 2, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.workers = workers

    def _results(self, items: Iterator[Any], stats: RunStats) -> Batches:
        ready = False
        window = self.batch_size * 4
        try:
            for batch in batches(ahead(self.step.prepare, items, self.workers, window),
                                 self.batch_size):  # fmt: skip
                if not ready:
                    loading = time.perf_counter()
                    self.step.setup()
                    ready = True
                    stats.load_seconds = time.perf_counter() - loading
                yield self.step.process(batch), len(batch)
        finally:
            if ready:
                self.step.close()
