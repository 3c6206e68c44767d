"""Annotate a dataset: a source through ``AnnotateStep`` into Parquet shards, on this
machine (here) or on a Ray cluster (``cluster``). Resumable: rerunning skips the ids already in
the shards.

Rows reach a shard only after their batch is answered, and a shard is closed every
``shard_size`` rows or ``flush_seconds``; a crash loses at most the rows not yet in a shard, and
the rerun redoes exactly those (their answers usually come back from the cache). Ctrl-C writes
what is buffered before stopping. One run at a time holds a results folder (a second is
refused); damaged shards are set aside and their inputs redone (``pipeline.shards``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from llavaguard.annotate.cluster import run_on_ray
from llavaguard.annotate.step import AnnotateConfig, AnnotateStep, Summary, identity, params
from llavaguard.annotate.store import CACHE, ResultStore
from llavaguard.errors import ConfigError
from llavaguard.inputs.sources import detect, read_source
from llavaguard.pipeline import LocalExecutor

__all__ = ["AnnotateConfig", "AnnotateStep", "Summary", "annotate"]


def annotate(
    cfg: AnnotateConfig | None = None,
    *,
    guard: Any = None,
    on_start: Callable[[int | None], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_unit: Callable[[Summary], None] | None = None,
    **kw: Any,
) -> Summary:
    """Annotate ``cfg.inputs`` into ``cfg.output``; resumes an unfinished run. ``guard``: an
    already built Guard to use instead of building ``cfg.guard`` (local backend). Progress:
    ``on_start(total)`` then ``on_batch(items)`` per batch, or on Ray ``on_start(units)``
    then ``on_unit(summary so far)`` per unit."""
    cfg = cfg or AnnotateConfig(**kw)
    if cfg.backend == "ray":
        if guard is not None:
            raise ConfigError("a built guard runs on the local backend; Ray actors build "
                              "cfg.guard")  # fmt: skip
        if cfg.limit is not None:
            raise ConfigError("--limit goes with the local backend: Ray workers read whole "
                              "units (use --unit-size and fewer inputs)")  # fmt: skip
    policy = cfg.guard.load_policy()
    store = ResultStore(cfg.output, shard_size=cfg.shard_size, flush_seconds=cfg.flush_seconds)
    store.with_units = cfg.backend == "local"  # a Ray run leaves the units to their markers
    store.open(identity(cfg, policy.id), params(cfg, policy), cfg.overwrite)
    summary = Summary()
    try:
        if cfg.backend == "ray":
            run_on_ray(cfg, store, policy.id, summary, on_start, on_unit)
        else:
            _run(cfg, store, policy.id, guard, summary, on_start, on_batch)
    finally:
        summary.shards = [str(p) for p in store.written]
        store.add_run(_run_record(summary, cfg))
        store.close()
    return summary


def _run(
    cfg: AnnotateConfig,
    store: ResultStore,
    policy_id: str,
    guard: Any,
    summary: Summary,
    on_start: Callable[[int | None], None] | None,
    on_batch: Callable[[int], None] | None,
) -> None:
    """The local run in a folder ``annotate`` has claimed."""
    redone = store.redo_failed("rating")  # failed inputs (no answer) are tried again
    if redone:
        store.say(f"{cfg.output}: trying again {redone} inputs that got no answer before")
    done = store.done_ids()
    options = cfg.source_options()
    if on_start is not None:
        on_start(_total(cfg, done, options))
    cache = cfg.output / CACHE if cfg.dedup else None
    step = AnnotateStep(cfg, policy_id, guard=guard, cache=cache)
    run = LocalExecutor(step, store, batch_size=cfg.batch_size, limit=cfg.limit,
                        on_batch=on_batch, workers=cfg.workers)  # fmt: skip
    run.run(read_source(cfg.inputs, cfg.source, **options), done, stats=summary)


def _total(cfg: AnnotateConfig, done: set[str], options: dict[str, Any]) -> int | None:
    """Inputs left to do, where counting is cheap (no reading of tar shards)."""
    kind = cfg.source if cfg.source != "auto" else detect(cfg.inputs)
    if kind not in ("folder", "list", "table"):
        return None
    total = sum(1 for it in read_source(cfg.inputs, kind, **options) if it.id not in done)
    return min(total, cfg.limit) if cfg.limit else total


def _run_record(summary: Summary, cfg: AnnotateConfig) -> dict[str, Any]:
    return {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "backend": cfg.backend,
        "rows": summary.rows, "assessed": summary.assessed, "cached": summary.cached,
        "failed": summary.failed, "skipped": summary.skipped,
        "duplicate_ids": summary.duplicate_ids, "seconds": round(summary.seconds, 3),
        "load_seconds": round(summary.load_seconds, 3),
        "interrupted": summary.interrupted,
        **({"units_done": summary.units_done, "units_skipped": summary.units_skipped,
            "units_failed": summary.units_failed} if cfg.backend == "ray" else {}),
    }  # fmt: skip
