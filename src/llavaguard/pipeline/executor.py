"""What every executor does the same way: skip what is done, count, write, time.

An executor is given a step, a writer and the items; it skips ids the writer has (and ids
seen twice in one run), stops after ``limit`` new items, hands batches to the step and the
rows to the writer, and counts the steps' statuses. Subclasses only say where batches run
(``_results``): ``LocalExecutor`` in this process, ``RayExecutor`` on Ray Data actors.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from llavaguard.pipeline.step import Result, Step
from llavaguard.pipeline.writer import Writer

Batches = Generator[tuple[list[Result], int], None, None]


@dataclass
class RunStats:
    seen: int = 0
    skipped: int = 0  # done in an earlier run
    duplicate_ids: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0  # processing, loading (setup) not included
    load_seconds: float = 0.0
    interrupted: bool = False

    @property
    def rows(self) -> int:
        return sum(self.statuses.values())


@dataclass
class UnitStats(RunStats):
    """A Ray run's counts: the items', and its units' (done now, done before, given up)."""

    units_done: int = 0
    units_skipped: int = 0
    units_failed: list[dict[str, Any]] = field(default_factory=list)

    def add(self, result: dict[str, Any]) -> None:
        self.units_done += 1
        self.statuses.update(result["statuses"])
        self.skipped += result["kept"]
        self.duplicate_ids += result["duplicate_ids"]
        self.load_seconds = max(self.load_seconds, result["load_seconds"])


class Executor:
    def __init__(
        self,
        step: Step,
        writer: Writer,
        *,
        batch_size: int = 8,
        limit: int | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.step = step
        self.writer = writer
        self.batch_size = batch_size
        self.limit = limit
        self.on_batch = on_batch

    def pending(
        self, items: Iterable[Any], stats: RunStats, done: set[str] | None = None
    ) -> Iterator[Any]:
        """The items still to do, in order: not done, not seen before, at most ``limit``."""
        done = self.writer.done_ids() if done is None else done
        seen: set[str] = set()
        if self.limit == 0:
            return
        for item in items:
            stats.seen += 1
            key = self.step.id_of(item)
            if key in done:
                stats.skipped += 1
            elif key in seen:
                stats.duplicate_ids += 1
            else:
                seen.add(key)
                yield item
                if self.limit is not None and len(seen) >= self.limit:
                    return

    def run(
        self, items: Iterable[Any], done: set[str] | None = None, stats: RunStats | None = None
    ) -> RunStats:
        """Process every pending item (``done``: ids to skip, by default the writer's); what
        is finished is written, even on Ctrl-C. ``stats`` is filled as the run goes."""
        stats = RunStats() if stats is None else stats
        started = time.perf_counter()
        batches = self._results(self.pending(items, stats, done), stats)
        try:
            for results, n in batches:
                stats.statuses.update(r.status for r in results)
                self.writer.write([r.row for r in results])
                if self.on_batch is not None:
                    self.on_batch(n)
        except KeyboardInterrupt:
            stats.interrupted = True
            raise
        finally:
            batches.close()  # the step is closed even when writing failed
            self.writer.flush()
            stats.seconds = time.perf_counter() - started - stats.load_seconds
        return stats

    def _results(self, items: Iterator[Any], stats: RunStats) -> Batches:
        """(results, items they came from) per batch; sets ``stats.load_seconds``."""
        raise NotImplementedError
