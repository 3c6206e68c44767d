"""Annotate a dataset: source -> read, hash and decode ahead -> dedup cache -> Guard batches
-> Parquet shards. Resumable: rerunning skips the ids already in the shards.

Rows reach a shard only after their batch is answered; a crash loses at most the rows not yet
in a shard, and the rerun redoes exactly those (their answers usually come back from the
cache). Ctrl-C writes what is buffered before stopping.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llavaguard.annotate.store import CACHE, DedupCache, ResultStore, now_ms
from llavaguard.errors import ConfigError, ImageError
from llavaguard.guard.spec import GuardSpec
from llavaguard.inputs.limits import ImageLimits
from llavaguard.inputs.sources import Item, detect, read_source


class AnnotateConfig(BaseModel):
    """One annotation run; the same fields are the CLI's options."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[str] = Field(min_length=1, description="Folders, lists, tables or shards.")
    output: Path = Field(description="Results folder (created; resumed when it exists).")
    source: str = Field("auto", description="auto, folder, list, table, webdataset or hf.")
    path_column: str | None = Field(None, description="table: the column with image paths.")
    id_column: str | None = Field(None, description="table/hf: the column with ids.")
    image_column: str | None = Field(None, description="hf: the image column.")
    guard: GuardSpec = Field(default_factory=GuardSpec, description="The safeguard to run.")
    batch_size: int = Field(8, ge=1, description="Images per engine batch.")
    shard_size: int = Field(1000, ge=1, description="Rows per Parquet shard.")
    workers: int = Field(2, ge=1, description="Threads reading and decoding ahead.")
    dedup: bool = Field(True, description="Judge identical image bytes once.")
    overwrite: bool = Field(False, description="Start over in an existing results folder.")
    limit: int | None = Field(None, ge=1, description="Stop after this many new inputs.")
    backend: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ray_actors: int = Field(1, ge=1, description="Engine actors (Ray backend).")


@dataclass
class Summary:
    seen: int = 0
    skipped: int = 0  # done in an earlier run
    duplicate_ids: int = 0
    assessed: int = 0
    cached: int = 0  # answered from the dedup cache
    failed: int = 0  # error rows: no answer
    shards: list[str] = field(default_factory=list)
    seconds: float = 0.0  # annotating, model loading not included
    load_seconds: float = 0.0
    interrupted: bool = False

    @property
    def rows(self) -> int:
        return self.assessed + self.cached + self.failed

    def line(self) -> str:
        rate = self.rows / self.seconds if self.seconds else 0.0
        return (
            f"{self.rows} new rows ({self.assessed} assessed, {self.cached} from cache, "
            f"{self.failed} failed), {self.skipped} already done, {rate:.2f} rows/s"
            + (f", {self.duplicate_ids} duplicate ids skipped" if self.duplicate_ids else "")
        )


@dataclass
class Prepared:
    item: Item
    sha256: str | None = None
    image: Any = None
    width: int | None = None
    height: int | None = None
    error: str | None = None


def prepare(item: Item, limits: ImageLimits) -> Prepared:
    """Bytes, hash and decoded image of one item, or the reason there are none."""
    from llavaguard.inputs.images import load_image

    max_bytes = limits.max_bytes
    if item.error:
        return Prepared(item, error=item.error)
    sha = None
    try:
        if isinstance(item.data, str):
            size = os.path.getsize(item.data)
            if size > max_bytes:
                return Prepared(item, error=f"{item.key}: file is {size} bytes, over the limit")
            with open(item.data, "rb") as f:
                data = f.read()
        else:
            data = item.data
        sha = hashlib.sha256(data).hexdigest()
        image = load_image(data, limits=limits, name=item.key)
        return Prepared(item, sha, image, image.width, image.height)
    except ImageError as e:
        return Prepared(item, sha, error=str(e))
    except OSError as e:
        return Prepared(item, error=f"{item.key}: cannot read ({e.strerror or e})")


def prepared_ahead(
    items: Iterable[Item], limits: ImageLimits, workers: int, window: int
) -> Iterator[Prepared]:
    """Items prepared by a thread pool, in order, at most ``window`` in flight."""
    with ThreadPoolExecutor(workers, thread_name_prefix="llavaguard-read") as pool:
        pending: list[Any] = []
        it = iter(items)
        for item in islice(it, window):
            pending.append(pool.submit(prepare, item, limits))
        while pending:
            done = pending.pop(0).result()
            nxt = next(it, None)
            if nxt is not None:
                pending.append(pool.submit(prepare, nxt, limits))
            yield done


def row(p: Prepared, record: dict[str, Any], cached: bool) -> dict[str, Any]:
    return {
        "id": p.item.id, "key": p.item.key, "sha256": p.sha256, "width": p.width,
        "height": p.height, "rating": record.get("rating"), "category": record.get("category"),
        "rationale": record.get("rationale"), "score": record.get("score"),
        "category_scores": record.get("category_scores"), "valid": bool(record.get("valid")),
        "error": record.get("error"), "cached": cached, "policy_id": record["policy_id"],
        "model": record["model"], "engine": record["engine"], "mode": record["mode"],
        "time": now_ms(),
    }  # fmt: skip


def identity(cfg: AnnotateConfig, policy_id: str) -> dict[str, Any]:
    """What must not change between the runs that fill one results folder."""
    g = cfg.guard
    return {"model": g.model, "engine": g.engine, "mode": g.mode, "policy_id": policy_id,
            "threshold": g.threshold, "image_max_pixels": g.image_max_pixels}  # fmt: skip


class Annotator:
    """Turns batches of prepared items into rows: the dedup cache first, then the Guard."""

    def __init__(self, guard: Any, cache: DedupCache | None) -> None:
        self.guard = guard
        self.cache = cache
        self.policy = guard.policy
        self.meta = {"policy_id": self.policy.id, "model": guard.engine.model_id,
                     "engine": guard.engine.name, "mode": guard.mode.value}  # fmt: skip

    def __call__(self, batch: list[Prepared], summary: Summary) -> list[dict[str, Any]]:
        ok = [p for p in batch if p.image is not None]
        known: dict[str, dict] = {}
        if self.cache is not None and ok:
            known = self.cache.get_many(
                (p.sha256 for p in ok), self.policy.id, self.meta["model"], self.meta["mode"]
            )
        todo: dict[str, Prepared] = {}
        for p in ok:
            if p.sha256 not in known:
                todo.setdefault(p.sha256, p)  # identical bytes within a batch: once
        fresh: dict[str, dict] = {}
        if todo:
            shas = list(todo)
            for sha, a in zip(shas, self.guard.assess(
                [todo[s].image for s in shas], ids=shas, batch_size=len(shas)
            ), strict=True):  # fmt: skip
                fresh[sha] = a.model_dump(mode="json")
            keep = {s: r for s, r in fresh.items() if not _failed(r)}
            if self.cache is not None and keep:
                self.cache.put_many(keep, self.policy.id, self.meta["model"], self.meta["mode"])
        rows, first = [], set()
        for p in batch:
            if p.image is None:
                rows.append(row(p, {**self.meta, "error": p.error}, cached=False))
                summary.failed += 1
                continue
            if p.sha256 in fresh and p.sha256 not in first:
                first.add(p.sha256)
                record, cached = fresh[p.sha256], False
            else:
                record, cached = known.get(p.sha256) or fresh[p.sha256], True
            rows.append(row(p, record, cached))
            if _failed(record):
                summary.failed += 1
            elif cached:
                summary.cached += 1
            else:
                summary.assessed += 1
        return rows


def _failed(record: dict[str, Any]) -> bool:
    return (
        record.get("error") is not None and record.get("raw") is None and not record.get("rating")
    )


def batches(it: Iterable[Prepared], size: int) -> Iterator[list[Prepared]]:
    it = iter(it)
    while batch := list(islice(it, size)):
        yield batch


def annotate(
    cfg: AnnotateConfig | None = None,
    *,
    guard: Any = None,
    on_start: Callable[[int | None], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
    **kw: Any,
) -> Summary:
    """Annotate ``cfg.inputs`` into ``cfg.output``; resumes an unfinished run."""
    from llavaguard import __version__

    cfg = cfg or AnnotateConfig(**kw)
    policy = cfg.guard.load_policy()
    store = ResultStore(cfg.output)
    params = {**cfg.model_dump(mode="json", exclude={"guard", "overwrite"}),
              "guard": cfg.guard.record(), "llavaguard_version": __version__,
              "policy": policy.describe()}  # fmt: skip
    store.open(identity(cfg, policy.id), params, cfg.overwrite)
    done = store.done_ids()
    options = {"path_column": cfg.path_column, "id_column": cfg.id_column,
               "image_column": cfg.image_column}  # fmt: skip
    summary = Summary()
    seen: set[str] = set()

    def todo() -> Iterator[Item]:
        for item in read_source(cfg.inputs, cfg.source, **options):
            summary.seen += 1
            if item.id in done:
                summary.skipped += 1
            elif item.id in seen:
                summary.duplicate_ids += 1
            else:
                seen.add(item.id)
                yield item
                if cfg.limit is not None and len(seen) >= cfg.limit:
                    return

    if on_start is not None:  # a total where counting is cheap (no reading of tar shards)
        kind = cfg.source if cfg.source != "auto" else detect(cfg.inputs)
        total = None
        if kind in ("folder", "list", "table"):
            total = sum(1 for it in read_source(cfg.inputs, kind, **options) if it.id not in done)
            total = min(total, cfg.limit) if cfg.limit else total
        on_start(total)
    started = time.perf_counter()
    if cfg.backend == "ray":
        from llavaguard.annotate.ray_backend import run_ray

        run_ray(cfg, todo(), store, summary, on_batch)
        summary.seconds = time.perf_counter() - started
        store.add_run(_run_record(summary, cfg))
        return summary
    own_guard = guard is None
    cache = DedupCache(cfg.output / CACHE) if cfg.dedup else None
    annotator: Annotator | None = None
    buffer: list[dict[str, Any]] = []
    try:
        window = cfg.batch_size * 4
        for batch in batches(prepared_ahead(todo(), cfg.guard.image_limits, cfg.workers, window),
                             cfg.batch_size):  # fmt: skip
            if annotator is None:  # loaded only when there is work: a finished run is quick
                loading = time.perf_counter()
                guard = guard or cfg.guard.build()
                if guard.policy.id != policy.id:
                    raise ConfigError("the guard's policy differs from the run's policy")
                annotator = Annotator(guard, cache)
                summary.load_seconds = time.perf_counter() - loading
            buffer.extend(annotator(batch, summary))
            if len(buffer) >= cfg.shard_size:
                summary.shards.append(str(store.write_shard(buffer)))
                buffer = []
            if on_batch is not None:
                on_batch(len(batch))
    except KeyboardInterrupt:
        summary.interrupted = True
        raise
    finally:
        if buffer:
            summary.shards.append(str(store.write_shard(buffer)))
        summary.seconds = time.perf_counter() - started - summary.load_seconds
        store.add_run(_run_record(summary, cfg))
        if cache is not None:
            cache.close()
        if own_guard and guard is not None:
            guard.close()
    return summary


def _run_record(summary: Summary, cfg: AnnotateConfig) -> dict[str, Any]:
    return {
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "backend": cfg.backend,
        "rows": summary.rows, "assessed": summary.assessed, "cached": summary.cached,
        "failed": summary.failed, "skipped": summary.skipped,
        "duplicate_ids": summary.duplicate_ids, "seconds": round(summary.seconds, 3),
        "load_seconds": round(summary.load_seconds, 3),
        "interrupted": summary.interrupted,
    }  # fmt: skip
