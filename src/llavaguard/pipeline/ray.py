"""The Ray executor: work units streamed to engine actors that read, judge and write them.

    driver:  units (streamed) -> skip the marked -> a few in flight per actor -> counts
    actor:   read the unit's items -> prepare ahead (threads) -> step.process in batches
             -> the unit's Parquet file + marker (``pipeline.units``) -> counts back

The driver holds the units in flight and the run's counts, never items or rows: its memory
does not grow with the run. Each actor sets its step up once (one model; one GPU each where
asked) and runs units with the local executor, so skipping, batching and counting are the
same code on both backends. A unit whose actor dies (a killed worker, a lost node) is tried
again on a restarted actor; one that fails ``attempts`` times is recorded and the run goes on.

Steps travel pickled to the actors: what a step holds before ``setup`` must pickle.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from llavaguard.errors import ConfigError
from llavaguard.pipeline.executor import UnitStats
from llavaguard.pipeline.local import LocalExecutor
from llavaguard.pipeline.records import FAILED
from llavaguard.pipeline.step import Result, Step
from llavaguard.pipeline.units import UnitOutput
from llavaguard.pipeline.writer import CRASH_ENV, crash_point, poison_point

Reader = Callable[[Any], Iterable[Any]]  # a unit -> its items


def connect(address: str | None) -> None:
    """Join the cluster at ``address`` (or start a local one), once per process."""
    import ray

    if ray.is_initialized():
        return
    crash = os.environ.get(CRASH_ENV)  # the tests' crash points reach the workers too
    ray.init(address=address, include_dashboard=False, log_to_driver=False,
             configure_logging=False,
             runtime_env={"env_vars": {CRASH_ENV: crash}} if crash else None)  # fmt: skip


class _Ready(Step):
    """A step the actor has set up: the local executor must neither load nor close it."""

    def __init__(self, step: Step) -> None:
        self.step = step

    def id_of(self, item: Any) -> str:
        return self.step.id_of(item)

    def prepare(self, item: Any) -> Any:
        return self.step.prepare(item)

    def process(self, batch: Sequence[Any]) -> list[Result]:
        return self.step.process(batch)


class _Rows:
    """A writer that keeps a unit's rows in memory until the unit is finished."""

    def __init__(self, kept: list[dict[str, Any]]) -> None:
        self.rows = list(kept)

    def done_ids(self) -> set[str]:
        return {str(r["id"]) for r in self.rows}

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        self.rows.extend(rows)

    def flush(self) -> None:
        pass


class UnitWorker:
    """The actor: one set-up step, and the units it is given, one at a time."""

    def __init__(
        self, step: Step, output: UnitOutput, read: Reader, batch_size: int, workers: int
    ) -> None:
        self.step, self.output, self.read = step, output, read
        self.batch_size, self.workers = batch_size, workers
        started = time.perf_counter()
        step.setup()
        self.load_seconds = time.perf_counter() - started
        self.where = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, unit: Any, token: str) -> dict[str, Any]:
        """Do one unit and write it; what the driver counts comes back."""
        begun = self.output.starting(unit.name, token)
        begun.parent.mkdir(parents=True, exist_ok=True)
        begun.touch()
        poison_point(unit.name)
        started = time.perf_counter()
        rows = _Rows(self.output.kept(unit.name))
        kept = len(rows.rows)
        run = LocalExecutor(_Ready(self.step), rows, batch_size=self.batch_size,
                            workers=self.workers)  # fmt: skip
        stats = run.run(self.read(unit))
        crash_point("work", 1)  # tests: a worker dying with a unit's rows made, not written
        seconds = time.perf_counter() - started
        info = {"failed": stats.statuses[FAILED], "seconds": round(seconds, 3), "by": self.where}
        self.output.write(unit.name, rows.rows, info)
        return {"unit": unit.name, "rows": stats.rows, "kept": kept, "statuses": stats.statuses,
                "duplicate_ids": stats.duplicate_ids, "seconds": seconds,
                "load_seconds": self.load_seconds}  # fmt: skip


def _last_line(e: BaseException) -> str:
    """The error a traceback ends with: what went wrong in an actor's constructor."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1][:300] if lines else e.__class__.__name__


def _reason(e: BaseException) -> str:
    """One line for a unit's failure: a task's error, or why its actor died."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        e = cause
    first = next((line.strip() for line in str(e).splitlines() if line.strip()), "")
    return f"{e.__class__.__name__}: {first}"[:300]


@dataclass
class RayOptions:
    """Where and how units run: the cluster, the actors and what each one holds."""

    address: str | None = None
    actors: int = 1
    cpus: float = 1.0  # per actor
    gpus: float | None = None  # per actor; None: one where the cluster has GPUs
    batch_size: int = 8
    workers: int = 2  # reader threads per actor
    in_flight: int = 1  # units given to an actor at a time: a unit queued behind one that
    # kills its actor would be charged a try it never had
    attempts: int = 3  # tries per unit before it is recorded as failed
    patience: float = 600.0  # seconds a unit waits for its restarting actor, not counted


class RayExecutor:
    """Runs units on ``options.actors`` actors; actor ``i`` holds ``steps[i % len(steps)]``
    (one step for all, or one per server of a pool)."""

    def __init__(
        self,
        steps: Sequence[Step],
        output: UnitOutput,
        read: Reader,
        options: RayOptions | None = None,
        on_unit: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.steps, self.output, self.read = list(steps), output, read
        self.options = options or RayOptions()
        self.on_unit = on_unit

    def _actors(self) -> list[Any]:
        import ray

        o = self.options
        gpus = o.gpus if o.gpus is not None else (1 if ray.cluster_resources().get("GPU") else 0)
        actor = ray.remote(UnitWorker).options(
            num_cpus=o.cpus, num_gpus=gpus, max_restarts=-1, max_task_retries=0,
            scheduling_strategy="SPREAD",
        )  # fmt: skip
        return [actor.remote(self.steps[i % len(self.steps)], self.output, self.read,
                             o.batch_size, o.workers) for i in range(o.actors)]  # fmt: skip

    def todo(self, units: Iterable[Any], stats: UnitStats) -> Iterable[tuple[Any, int, float]]:
        """The units not done yet, streamed, each with its tries and time waited so far."""
        for unit in units:
            state, rows = self.output.state(unit.name)
            if state == "done":
                stats.units_skipped += 1
                stats.skipped += rows
            else:
                yield unit, 0, 0.0

    def run(self, units: Iterable[Any], stats: UnitStats | None = None) -> UnitStats:
        """Every unit not done yet, at most ``in_flight`` per actor; ``stats`` fills as
        units finish (the run is resumable at any point: finished units are on disk)."""
        import ray

        stats = UnitStats() if stats is None else stats
        started = time.perf_counter()
        connect(self.options.address)
        pending, retry = iter(self.todo(units, stats)), deque()
        actors, flight = self._actors(), {}

        def submit(i: int) -> None:
            nxt = retry.popleft() if retry else next(pending, None)
            if nxt is not None:
                token = uuid.uuid4().hex[:12]
                flight[actors[i].run.remote(nxt[0], token)] = (*nxt, token, i)

        try:
            for i in range(len(actors) * self.options.in_flight):
                submit(i % len(actors))
            while flight:
                (ref,), _ = ray.wait(list(flight), num_returns=1)
                unit, attempt, waited, token, i = flight.pop(ref)
                began = self.output.starting(unit.name, token)
                self._settle(ref, (unit, attempt, waited), began.exists(), stats, retry)
                began.unlink(missing_ok=True)
                submit(i)
        except KeyboardInterrupt:
            stats.interrupted = True
            raise
        finally:
            for actor in actors:
                ray.kill(actor)
            stats.seconds = time.perf_counter() - started - stats.load_seconds
        return stats

    def _settle(
        self, ref: Any, entry: tuple[Any, int, float], began: bool, stats: UnitStats,
        retry: deque,
    ) -> None:  # fmt: skip
        """Count a finished unit, or try it again, or record it as failed. A unit whose try
        had begun (``began``) is charged it; one that an actor could not take (restarting
        after its node was lost or its process killed) waits, with pauses, uncharged."""
        import ray

        unit, attempt, waited = entry
        try:
            result = ray.get(ref)
        except ray.exceptions.RayError as e:
            actor = isinstance(e, ray.exceptions.RayActorError)
            if actor and e.actor_init_failed:  # the engine cannot load: no unit will run
                raise ConfigError(f"an engine actor could not start: {_last_line(e)}") from None
            if began or not actor or waited >= self.options.patience:
                result = self._failed(unit, attempt, e, stats, retry)
            else:
                pause = min(max(1.0, waited), 10.0)  # 1, 1, 2, 4, 8, 10, 10 s...
                time.sleep(pause)
                retry.append((unit, attempt, waited + pause))
                return
        else:
            stats.add(result)
        if result is not None and self.on_unit is not None:
            self.on_unit(result)

    def _failed(
        self, unit: Any, attempt: int, e: BaseException, stats: UnitStats, retry: deque
    ) -> dict[str, Any] | None:
        if attempt + 1 < self.options.attempts:
            retry.append((unit, attempt + 1, 0.0))
            return None
        stats.units_failed.append({"unit": unit.name, "path": unit.path,
                                   "attempts": attempt + 1, "reason": _reason(e)})  # fmt: skip
        return {"unit": unit.name, "failed_unit": True}
