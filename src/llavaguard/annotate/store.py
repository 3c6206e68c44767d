"""A results folder: Parquet shards written atomically, a manifest, and the dedup cache.

    results/
      _manifest.json        what produced the rows (model, engine, policy id, mode, ...) and runs
      part-000000-<run>.parquet   one row per input; shards are written to a hidden temporary
      part-000001-<run>.parquet   name, then renamed, so a shard is either whole or absent
      _cache.sqlite         image sha256 + policy + model -> assessment (dedup across inputs)
      _damaged/             shards a run could not use, set aside (their inputs were redone)

Names starting with "_" or "." are what Parquet readers skip, so ``pq.read_table(results)``
reads the rows and nothing else.

Resume rules (``pipeline.shards``): the ids in the shards are done; a rerun skips them. A
different model, engine, mode or policy in the same folder is refused unless the caller starts
over. What survives which fault (a kill, a second run, a damaged shard or manifest) is
``pipeline.shards``'s doing; docs/annotate.md has the table.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from llavaguard.pipeline.shards import MANIFEST, ShardWriter

__all__ = ["CACHE", "MANIFEST", "DedupCache", "ResultStore", "SharedCache", "now_ms"]

CACHE = "_cache.sqlite"
IDENTITY = ("model", "engine", "mode", "policy_id", "threshold", "image_max_pixels",
            "multi_label", "calibration")  # fmt: skip


def schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()), ("key", pa.string()), ("sha256", pa.string()),
        ("width", pa.int32()), ("height", pa.int32()),
        ("rating", pa.string()), ("category", pa.string()), ("rationale", pa.string()),
        ("score", pa.float64()), ("category_scores", pa.map_(pa.string(), pa.float64())),
        ("valid", pa.bool_()), ("error", pa.string()), ("cached", pa.bool_()),
        ("raw_score", pa.float64()), ("violations", pa.map_(pa.string(), pa.float64())),
        ("policy_id", pa.string()), ("model", pa.string()), ("engine", pa.string()),
        ("mode", pa.string()), ("time", pa.timestamp("ms", tz="UTC")),
    ])  # fmt: skip


class ResultStore(ShardWriter):
    """An annotation results folder: the pipeline's shard writer with annotation's row schema
    and identity, and the dedup cache cleared with the rest on ``--overwrite``."""

    identity_keys = IDENTITY

    def __init__(self, root: Path, shard_size: int = 1000, flush_seconds: float = 60.0) -> None:
        super().__init__(root, schema=schema, shard_size=shard_size, flush_seconds=flush_seconds)

    def clear(self) -> None:
        super().clear()
        for name in (CACHE, CACHE + "-wal", CACHE + "-shm"):
            (self.root / name).unlink(missing_ok=True)


class DedupCache:
    """Assessments by (image sha256, policy id, model, mode): identical bytes are judged once."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")  # a cache: an app crash loses nothing
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS results (sha256 TEXT, policy_id TEXT, model TEXT,"
            " mode TEXT, record TEXT, PRIMARY KEY (sha256, policy_id, model, mode))"
        )
        self.db.commit()

    def get_many(self, shas: Iterable[str], policy_id: str, model: str, mode: str) -> dict:
        out = {}
        for sha in set(shas):
            row = self.db.execute(
                "SELECT record FROM results WHERE sha256=? AND policy_id=? AND model=? AND mode=?",
                (sha, policy_id, model, mode),
            ).fetchone()
            if row:
                out[sha] = json.loads(row[0])
        return out

    def put_many(self, records: dict[str, dict], policy_id: str, model: str, mode: str) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO results VALUES (?, ?, ?, ?, ?)",
            [(sha, policy_id, model, mode, json.dumps(r)) for sha, r in records.items()],
        )
        self.db.commit()

    def close(self) -> None:
        self.db.close()


class SharedCache:
    """The dedup cache of a Ray run: one ``DedupCache`` in an actor that every engine actor
    asks, so identical bytes are judged once per run, not once per worker. It lives beside
    the driver (on its node, the results folder's SQLite file), so a resumed run still knows
    what the killed one judged. Two workers meeting the same new bytes at the same moment may
    both judge them: the rows stay right, the saving is lost for that pair."""

    def __init__(self, name: str) -> None:
        self.name = name  # a named actor, found where it is used: a handle passed to an
        self._handle: Any = None  # actor's constructor would stop Ray restarting that actor

    @classmethod
    def start(cls, path: Path) -> SharedCache:
        import uuid

        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        cache = cls(f"llavaguard-dedup-{uuid.uuid4().hex[:12]}")
        cache._handle = ray.remote(DedupCache).options(  # restarted and asked again if it dies
            name=cache.name, num_cpus=0, scheduling_strategy=here, max_restarts=-1,
            max_task_retries=-1,
        ).remote(path)  # fmt: skip
        return cache

    def __getstate__(self) -> dict[str, Any]:
        return {"name": self.name}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.name, self._handle = state["name"], None

    @property
    def handle(self) -> Any:
        import ray

        if self._handle is None:
            self._handle = ray.get_actor(self.name)
        return self._handle

    def get_many(self, shas: list[str], policy_id: str, model: str, mode: str) -> dict:
        import ray

        return ray.get(self.handle.get_many.remote(shas, policy_id, model, mode))

    def put_many(self, records: dict[str, dict], policy_id: str, model: str, mode: str) -> None:
        import ray

        ray.get(self.handle.put_many.remote(records, policy_id, model, mode))

    def close(self) -> None:
        """Nothing: the driver's actor outlives each worker's use of it."""


def now_ms() -> int:
    return int(time.time() * 1000)
