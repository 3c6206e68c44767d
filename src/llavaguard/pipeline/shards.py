"""A folder of Parquet shards with a manifest: the resumable writer for tabular results.

    folder/
      _manifest.json        identity (what must not change between runs), params, runs
      part-000000.parquet   rows; written to a hidden .tmp name, fsynced, then renamed,
      part-000001.parquet   so a shard is either whole or absent

Names starting with "_" or "." are what Parquet readers skip, so ``pq.read_table(folder)``
reads the rows and nothing else. The ids in the shards are done. A folder made with another
identity is refused unless the caller starts over; stale temporary files are removed on open.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llavaguard.errors import ConfigError
from llavaguard.pipeline.writer import atomic_write, crash_point

MANIFEST = "_manifest.json"


class ShardWriter:
    """``write`` buffers rows and writes a shard each ``shard_size`` rows; ``flush`` the rest."""

    identity_keys: Sequence[str] = ()

    def __init__(
        self, root: Path, schema: Callable[[], Any] | None = None, shard_size: int = 1000
    ) -> None:
        self.root = Path(root)
        self.schema = schema
        self.shard_size = shard_size
        self.buffer: list[dict[str, Any]] = []
        self.written: list[Path] = []

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
        for tmp in self.root.glob(".part-*.parquet.tmp"):  # left by a crash before its rename
            tmp.unlink()
        if existing is not None:
            theirs = existing.get("identity", {})
            keys = self.identity_keys or sorted(set(theirs) | set(identity))
            diff = [k for k in keys if theirs.get(k) != identity.get(k)]
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
        atomic_write(self.root / MANIFEST, (json.dumps(doc, indent=2) + "\n").encode())

    def clear(self) -> None:
        for p in [*self.root.glob("part-*.parquet"), *self.root.glob(".part-*.parquet.tmp")]:
            p.unlink()
        (self.root / MANIFEST).unlink(missing_ok=True)

    # ---- shards --------------------------------------------------------------------------
    def shards(self) -> list[Path]:
        return sorted(self.root.glob("part-*.parquet"))

    def done_ids(self) -> set[str]:
        import pyarrow.parquet as pq

        done: set[str] = set()
        for shard in self.shards():
            done.update(pq.read_table(shard, columns=["id"]).column("id").to_pylist())
        return done

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        self.buffer.extend(rows)
        while len(self.buffer) >= self.shard_size:
            self.write_shard(self.buffer[: self.shard_size])
            self.buffer = self.buffer[self.shard_size :]

    def flush(self) -> None:
        if self.buffer:
            self.write_shard(self.buffer)
            self.buffer = []

    def write_shard(self, rows: Sequence[dict[str, Any]]) -> Path | None:
        if not rows:
            return None
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        self.root.mkdir(parents=True, exist_ok=True)
        existing = self.shards()
        n = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0
        path = self.root / f"part-{n:06d}.parquet"
        schema = self.schema() if self.schema else None
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(list(rows), schema=schema), sink)
        atomic_write(path, sink.getvalue(), crash="shard")
        self.written.append(path)
        crash_point("rows", len(rows))
        return path

    def rows(self, columns: Sequence[str] | None = None) -> Any:
        """All rows as one pyarrow table."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        shards = self.shards()
        if not shards:
            return self.schema().empty_table() if self.schema else pa.table({})
        return pa.concat_tables(pq.read_table(s, columns=columns) for s in shards)
