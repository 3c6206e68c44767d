"""Annotation as a pipeline step: its config, the step both backends run (read, hash and
decode ahead -> dedup cache -> Guard batches -> one row per input) and the run's counts.

``run`` runs it on this machine, ``cluster`` on Ray; both write one results folder
(``store``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llavaguard.annotate.store import DedupCache, now_ms
from llavaguard.errors import ConfigError, ImageError
from llavaguard.guard.core import Guard
from llavaguard.guard.spec import GuardSpec
from llavaguard.inputs.limits import ImageLimits
from llavaguard.inputs.sources import Item
from llavaguard.pipeline import FAILED, Result, Step, UnitStats, is_failed


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
    flush_seconds: float = Field(
        60.0, gt=0, description="Close a shard once its first row has waited this long."
    )
    workers: int = Field(2, ge=1, description="Threads reading and decoding ahead.")
    dedup: bool = Field(True, description="Judge identical image bytes once.")
    overwrite: bool = Field(False, description="Start over in an existing results folder.")
    limit: int | None = Field(None, ge=1, description="Stop after this many new inputs.")
    backend: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    ray_actors: int = Field(1, ge=1, description="Engine actors (Ray backend).")
    ray_cpus: float = Field(1.0, ge=0, description="CPUs each Ray actor reserves.")
    ray_gpus: float | None = Field(
        None, ge=0, description="GPUs each Ray actor reserves (default: 1 if the cluster has any)."
    )
    ray_base_urls: list[str] = Field(
        default_factory=list,
        description="A pool of servers (vllm/openai engines): actor i uses URL i mod n.",
    )
    unit_size: int = Field(
        1000, ge=1, description="Inputs per work unit of a path list or folder (Ray backend)."
    )

    def source_options(self) -> dict[str, Any]:
        """What the source readers take besides the paths."""
        return {"path_column": self.path_column, "id_column": self.id_column,
                "image_column": self.image_column}  # fmt: skip


@dataclass
class Summary(UnitStats):
    """A run's counts: the executor's, by status (assessed, cached, failed), its shards, and on
    Ray its work units."""

    shards: list[str] = field(default_factory=list)

    @property
    def assessed(self) -> int:
        return self.statuses["assessed"]

    @property
    def cached(self) -> int:  # answered from the dedup cache
        return self.statuses["cached"]

    @property
    def failed(self) -> int:  # no answer (``pipeline.is_failed``)
        return self.statuses[FAILED]

    def line(self) -> str:
        rate = self.rows / self.seconds if self.seconds else 0.0
        return (
            f"{self.rows} new rows ({self.assessed} assessed, {self.cached} from cache, "
            f"{self.failed} failed), {self.skipped} already done, {rate:.2f} rows/s"
            + (f", {self.duplicate_ids} duplicate ids skipped" if self.duplicate_ids else "")
            + self._units_line()
        )

    def _units_line(self) -> str:
        if not (self.units_done or self.units_skipped or self.units_failed):
            return ""
        failed = self.units_failed
        line = f"; units: {self.units_done} done, {self.units_skipped} done before"
        if failed:
            line += (f", {len(failed)} failed (in the manifest; first: {failed[0]['unit']}: "
                     f"{failed[0]['reason']})")  # fmt: skip
        return line


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


def row(p: Prepared, record: dict[str, Any], cached: bool) -> dict[str, Any]:
    return {
        "id": p.item.id, "key": p.item.key, "sha256": p.sha256, "width": p.width,
        "height": p.height, "rating": record.get("rating"), "category": record.get("category"),
        "rationale": record.get("rationale"), "score": record.get("score"),
        "category_scores": record.get("category_scores"), "valid": bool(record.get("valid")),
        "error": record.get("error"), "cached": cached, "raw_score": record.get("raw_score"),
        "violations": record.get("violations"), "policy_id": record["policy_id"],
        "model": record["model"], "engine": record["engine"], "mode": record["mode"],
        "time": now_ms(),
    }  # fmt: skip


def identity(cfg: AnnotateConfig, policy_id: str) -> dict[str, Any]:
    """What must not change between the runs that fill one results folder."""
    g = cfg.guard
    return {"model": g.model, "engine": g.engine, "mode": g.mode, "policy_id": policy_id,
            "threshold": g.threshold, "image_max_pixels": g.image_max_pixels,
            # None when off, as in folders written before these options existed
            "multi_label": True if g.multi_label else None,
            "calibration": _file_id(g.calibration)}  # fmt: skip


def _file_id(path: str | None) -> str | None:
    """A calibration by its content: the same file name refitted is another calibration."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16] if path else None


class Annotator:
    """Turns batches of prepared items into rows: the dedup cache first, then the Guard."""

    def __init__(self, guard: Any, cache: DedupCache | None) -> None:
        self.guard = guard
        self.cache = cache
        self.policy = guard.policy
        self.meta = {"policy_id": self.policy.id, "model": guard.engine.model_id,
                     "engine": guard.engine.name, "mode": guard.mode.value}  # fmt: skip

    def _lookup(self, ok: list[Prepared]) -> tuple[dict[str, dict], dict[str, dict]]:
        """(known: answers from the cache, fresh: answers from the Guard) by sha256."""
        key = (self.policy.id, self.meta["model"], self.meta["mode"])
        known: dict[str, dict] = {}
        if self.cache is not None and ok:
            known = self.cache.get_many([p.sha256 for p in ok], *key)
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
            keep = {s: r for s, r in fresh.items() if not is_failed(r)}
            if self.cache is not None and keep:
                self.cache.put_many(keep, *key)
        return known, fresh

    def __call__(self, batch: Sequence[Prepared]) -> list[Result]:
        known, fresh = self._lookup([p for p in batch if p.image is not None])
        results, first = [], set()
        for p in batch:
            if p.image is None:
                record, cached = {**self.meta, "error": p.error}, False
            elif p.sha256 in fresh and p.sha256 not in first:
                first.add(p.sha256)
                record, cached = fresh[p.sha256], False
            else:
                record, cached = known.get(p.sha256) or fresh[p.sha256], True
            status = FAILED if is_failed(record) else "cached" if cached else "assessed"
            results.append(Result(row(p, record, cached), status))
        return results


class AnnotateStep(Step):
    """Annotation as a pipeline step: items are read, hashed and decoded in ``prepare``; the
    Guard (built in ``setup`` unless one is given) judges them in ``process``. Picklable
    before ``setup``, so Ray actors each build their own Guard."""

    def __init__(
        self, cfg: AnnotateConfig, policy_id: str, guard: Any = None, cache: Any = None
    ) -> None:
        """``cache``: the SQLite file of the dedup cache, or an object with its methods
        (``store.SharedCache`` on Ray), or None."""
        self.cfg, self.policy_id, self.cache = cfg, policy_id, cache
        self.guard, self.own_guard = guard, guard is None
        self.annotator: Annotator | None = None

    def prepare(self, item: Item) -> Prepared:
        return prepare(item, self.cfg.guard.image_limits)

    def setup(self) -> None:
        if self.guard is None:
            self.guard = Guard.from_spec(self.cfg.guard)
        if self.guard.policy.id != self.policy_id:
            raise ConfigError("the guard's policy differs from the run's policy")
        cache = DedupCache(self.cache) if isinstance(self.cache, Path) else self.cache
        self.annotator = Annotator(self.guard, cache)

    def process(self, batch: Sequence[Prepared]) -> list[Result]:
        assert self.annotator is not None, "setup() first"
        return self.annotator(batch)

    def close(self) -> None:
        if self.annotator is not None and self.annotator.cache is not None:
            self.annotator.cache.close()
        if self.own_guard and self.guard is not None:
            self.guard.close()
            self.guard = None


def params(cfg: AnnotateConfig, policy: Any) -> dict[str, Any]:
    from llavaguard import __version__

    return {**cfg.model_dump(mode="json", exclude={"guard", "overwrite"}),
            "guard": cfg.guard.record(), "llavaguard_version": __version__,
            "policy": policy.describe()}  # fmt: skip
