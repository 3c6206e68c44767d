"""A results folder: Parquet shards written atomically, a manifest, and the dedup cache.

    results/
      _manifest.json        what produced the rows (model, engine, policy id, mode, ...) and runs
      part-000000.parquet   one row per input; shards are written to a hidden temporary name,
      part-000001.parquet   then renamed, so a shard is either whole or absent
      _cache.sqlite         image sha256 + policy + model -> assessment (dedup across inputs)

Names starting with "_" or "." are what Parquet readers skip, so ``pq.read_table(results)``
reads the rows and nothing else.

Resume rules: the ids in the shards are done; a rerun skips them. A different model, engine,
mode or policy in the same folder is refused unless the caller starts over.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from llavaguard.errors import ConfigError

MANIFEST = "_manifest.json"
CACHE = "_cache.sqlite"
IDENTITY = ("model", "engine", "mode", "policy_id", "threshold", "image_max_pixels")


def schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        ("id", pa.string()), ("key", pa.string()), ("sha256", pa.string()),
        ("width", pa.int32()), ("height", pa.int32()),
        ("rating", pa.string()), ("category", pa.string()), ("rationale", pa.string()),
        ("score", pa.float64()), ("category_scores", pa.map_(pa.string(), pa.float64())),
        ("valid", pa.bool_()), ("error", pa.string()), ("cached", pa.bool_()),
        ("policy_id", pa.string()), ("model", pa.string()), ("engine", pa.string()),
        ("mode", pa.string()), ("time", pa.timestamp("ms", tz="UTC")),
    ])  # fmt: skip


class ResultStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ---- manifest ------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any] | None:
        path = self.root / MANIFEST
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise ConfigError(f"{path}: unreadable manifest ({e})") from e

    def open(self, identity: dict[str, Any], params: dict[str, Any], overwrite: bool) -> None:
        """Start or resume: a folder made with other settings is refused, not mixed."""
        existing = self.manifest()
        if existing is not None and overwrite:
            self.clear()
            existing = None
        if existing is not None:
            theirs = existing.get("identity", {})
            diff = [k for k in IDENTITY if theirs.get(k) != identity.get(k)]
            if diff:
                k = diff[0]
                raise ConfigError(
                    f"{self.root} holds results with {k} {theirs.get(k)!r}, not "
                    f"{identity.get(k)!r}; use another folder or --overwrite to start over"
                )
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self._write_manifest({"identity": identity, "params": params, "runs": []})

    def add_run(self, run: dict[str, Any]) -> None:
        doc = self.manifest() or {"identity": {}, "params": {}, "runs": []}
        doc.setdefault("runs", []).append(run)
        self._write_manifest(doc)

    def _write_manifest(self, doc: dict[str, Any]) -> None:
        _atomic_write(self.root / MANIFEST, (json.dumps(doc, indent=2) + "\n").encode())

    def clear(self) -> None:
        for p in [*self.root.glob("part-*.parquet"), *self.root.glob(".part-*.parquet.tmp")]:
            p.unlink()
        for name in (MANIFEST, CACHE, CACHE + "-wal", CACHE + "-shm"):
            (self.root / name).unlink(missing_ok=True)

    # ---- shards --------------------------------------------------------------------------
    def shards(self) -> list[Path]:
        return sorted(self.root.glob("part-*.parquet"))

    def done_ids(self) -> set[str]:
        import pyarrow.parquet as pq

        done: set[str] = set()
        for shard in self.shards():
            done.update(pq.read_table(shard, columns=["id"]).column("id").to_pylist())
        return done

    def write_shard(self, rows: Sequence[dict[str, Any]]) -> Path | None:
        if not rows:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        existing = self.shards()
        n = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        path = self.root / f"part-{n:06d}.parquet"
        tmp = path.with_name("." + path.name + ".tmp")
        pq.write_table(pa.Table.from_pylist(list(rows), schema=schema()), tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    def rows(self, columns: Sequence[str] | None = None) -> Any:
        """All rows as one pyarrow table."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        shards = self.shards()
        if not shards:
            return schema().empty_table()
        return pa.concat_tables(pq.read_table(s, columns=columns) for s in shards)


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


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def now_ms() -> int:
    return int(time.time() * 1000)
