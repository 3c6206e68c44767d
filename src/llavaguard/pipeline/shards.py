"""A folder of Parquet shards with a manifest: the resumable writer for tabular results.

    folder/
      _manifest.json                 identity (what must not change between runs), params, runs
      part-000000-<run>.parquet      rows; written to a hidden .tmp name, fsynced, then renamed,
      part-000001-<run>.parquet      so a shard is either whole or absent
      _damaged/                      shards a run found unreadable or foreign, set aside
      part-u-<unit>.parquet          a Ray run's rows, one file per work unit, and
      _units/<unit>.json             its completion marker (``pipeline.units``)
      .lock                          held (flock) by the run writing here

Names starting with "_" or "." are what Parquet readers skip, so ``pq.read_table(folder)``
reads the rows and nothing else. The ids in the shards are done.

A folder must survive whatever happens to it between runs, so nothing rests on one file:

* a shard is closed after ``shard_size`` rows or once its first row has waited
  ``flush_seconds`` (a timer, however slow the next batch), so a kill loses little;
* each shard names its writer (``<run>``, random), so two writers never pick the same name, and
  a run holds the folder's lock (``writer.RunLock``), so a second run is refused;
* each shard carries its run's identity and params in its Parquet metadata (``RUN_KEY``): a
  missing or damaged manifest is rebuilt from them, and a run with another identity is refused
  even without the manifest;
* a shard that cannot be read (truncated, empty, not Parquet, not a results shard) or that
  another run made is moved to ``_damaged/`` with a warning, and its rows are redone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from llavaguard.errors import ConfigError
from llavaguard.pipeline.writer import RunLock, atomic_write, check_writable, crash_point

MANIFEST = "_manifest.json"
DAMAGED = "_damaged"
RUN_KEY = b"llavaguard.run"  # a shard's Parquet metadata: {"identity": ..., "params": ...}
SHARD = re.compile(r"part-(\d+)(-[0-9a-f]+)?\.parquet")
UNITS = "_units"  # work units' completion markers (``pipeline.units``)
UNIT_PREFIX = "part-u-"  # a work unit's rows: part-u-<unit>.parquet


def warn(message: str) -> None:
    """What a writer repaired or skipped, as one line on stderr: the user must hear of it,
    and a run's output is not the place (``sys.stderr`` looked up now, so it can be captured).
    """
    print(f"warning: {message}", file=sys.stderr)


class Manifest(BaseModel):
    """The manifest's shape: a file that does not have it is damaged, not trusted."""

    identity: dict[str, Any]
    params: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []


@dataclass
class Scan:
    """What the shards of a folder hold: ids and run of each readable shard, why the others
    cannot be used."""

    ids: dict[Path, list[str]] = field(default_factory=dict)
    runs: dict[Path, dict[str, Any] | None] = field(default_factory=dict)
    damaged: dict[Path, str] = field(default_factory=dict)


class ShardWriter:
    """``write`` buffers rows and writes a shard each ``shard_size`` rows, or (a timer) when
    the oldest buffered row has waited ``flush_seconds``; ``flush`` writes the rest. ``open``
    claims the folder for a run (checked, locked, repaired), ``close`` lets it go."""

    identity_keys: Sequence[str] = ()

    def __init__(
        self,
        root: Path,
        schema: Callable[[], Any] | None = None,
        shard_size: int = 1000,
        flush_seconds: float = 60.0,
        say: Callable[[str], None] = warn,
    ) -> None:
        self.root = Path(root)
        self.schema = schema
        self.shard_size = shard_size
        self.flush_seconds = flush_seconds
        self.say = say
        self.buffer: list[dict[str, Any]] = []
        self._mutex = threading.RLock()  # the buffer, between the run and the flush timer
        self._timer: threading.Timer | None = None
        self.written: list[Path] = []
        self.set_aside: list[str] = []
        self.run: dict[str, Any] | None = None  # stamped into each shard
        self.token = uuid.uuid4().hex[:8]
        self.next: int | None = None
        self.lock = RunLock.folder(self.root)
        self._done: set[str] | None = None
        self.with_units = True

    # ---- manifest ------------------------------------------------------------------------
    def manifest(self) -> dict[str, Any] | None:
        """The manifest; None when there is none; one line when it is damaged."""
        doc, why = self._read_manifest()
        if why:
            raise ConfigError(f"{self.root / MANIFEST}: manifest {why}")
        return doc

    def _read_manifest(self) -> tuple[dict[str, Any] | None, str | None]:
        path = self.root / MANIFEST
        if not path.exists():
            return None, None
        try:
            doc = Manifest.model_validate_json(path.read_bytes())
        except OSError as e:
            return None, f"unreadable ({e.strerror})"
        except ValidationError:
            return None, "damaged (not the JSON of a manifest)"
        return doc.model_dump(), None

    def describe(self) -> dict[str, Any] | None:
        """The manifest, or what the shards say when it is missing or damaged (for readers:
        nothing is written); None when neither says anything."""
        doc, _ = self._read_manifest()
        return doc if doc is not None else _shards_doc(self.scan())

    def open(self, identity: dict[str, Any], params: dict[str, Any], overwrite: bool) -> None:
        """Claim the folder for a run and start or resume it: a folder that cannot be written
        or that another run holds is refused, as are results made with other settings (by the
        manifest or, without one, by the shards); damage is set aside and repaired."""
        check_writable(self.root)
        self.lock.acquire()
        try:
            self._open(identity, params, overwrite)
        except BaseException:
            self.lock.release()
            raise

    def close(self) -> None:
        """Let the folder go (the rows are flushed by the executor, not here)."""
        self.lock.release()

    def _open(self, identity: dict[str, Any], params: dict[str, Any], overwrite: bool) -> None:
        if overwrite:
            self.clear()
        for tmp in self.root.glob(".part-*.parquet.*tmp"):  # left by a crash before its rename
            tmp.unlink()
        self.run = {"identity": identity, "params": params}
        scan = self.scan()
        doc, why = self._read_manifest()
        rebuild = doc is None and (why is not None or bool(scan.ids))
        if doc is None:
            doc = self._from_shards(scan, why)
        self._refuse_other(doc["identity"] if doc else identity, identity)
        for path, run in scan.runs.items():
            if run is not None and self._differs(run["identity"], identity):
                scan.damaged[path] = "made by another run"
        self._set_aside(scan)
        if doc is None or rebuild:
            self._write_manifest(doc or {"identity": identity, "params": params, "runs": []})
        if rebuild:
            whence = " from the shards" if doc else ""
            self.say(f"{self.root}: the manifest was {why or 'missing'}; rebuilt it{whence}")
        self._done = {i for path, ids in scan.ids.items() if path not in scan.damaged
                      for i in ids}  # fmt: skip

    def _from_shards(self, scan: Scan, why: str | None) -> dict[str, Any] | None:
        """The manifest a folder without a usable one had: its shards' run."""
        runs = [r for r in scan.runs.values() if r is not None]
        if len(runs) < len(scan.runs):  # shards older than their run's identity
            raise ConfigError(
                f"{self.root}: the manifest is {'damaged' if why else 'missing'} and some "
                "shards do not say what made them; use --overwrite to start over or another "
                "output folder"
            )
        return _shards_doc(scan)

    def _differs(self, theirs: dict[str, Any], ours: dict[str, Any]) -> list[str]:
        keys = self.identity_keys or sorted(set(theirs) | set(ours))
        return [k for k in keys if theirs.get(k) != ours.get(k)]

    def _refuse_other(self, theirs: dict[str, Any], ours: dict[str, Any]) -> None:
        diff = self._differs(theirs, ours)
        if diff:
            k = diff[0]
            raise ConfigError(
                f"{self.root} holds results with {k} {theirs.get(k)!r}, not {ours.get(k)!r}; "
                "use another folder or --overwrite to start over"
            )

    def add_run(self, run: dict[str, Any]) -> None:
        doc, _ = self._read_manifest()
        doc = doc or {**(self.run or {"identity": {}, "params": {}}), "runs": []}
        if self.set_aside:
            run = {**run, "set_aside": self.set_aside}
        doc.setdefault("runs", []).append(run)
        self._write_manifest(doc)

    def _write_manifest(self, doc: dict[str, Any]) -> None:
        atomic_write(self.root / MANIFEST, (json.dumps(doc, indent=2) + "\n").encode())

    def clear(self) -> None:
        for p in [*self.root.glob("part-*.parquet"), *self.root.glob(".part-*.parquet.*tmp")]:
            p.unlink()
        (self.root / MANIFEST).unlink(missing_ok=True)
        for folder in (DAMAGED, UNITS):
            shutil.rmtree(self.root / folder, ignore_errors=True)

    # ---- shards --------------------------------------------------------------------------
    def shards(self) -> list[Path]:
        """The shards, with or without the work units' (``with_units``): a Ray run leaves
        those to their markers (``pipeline.units``) and never reads them whole."""
        found = sorted(self.root.glob("part-*.parquet"))
        return found if self.with_units else [p for p in found if not is_unit_shard(p)]

    def scan(self) -> Scan:
        """Read each shard's footer and ids: what it holds, or why it cannot be used."""
        import pyarrow as pa

        scan = Scan()
        for path in self.shards():
            try:
                ids, run = self._read_shard(path)
            except FileNotFoundError:  # set aside meanwhile by a run
                continue
            except (OSError, ValueError, ConfigError, pa.ArrowException) as e:
                scan.damaged[path] = str(e) if isinstance(e, ConfigError) else (
                    "empty" if _size(path) == 0 else "not a readable Parquet file")  # fmt: skip
                continue
            scan.ids[path], scan.runs[path] = ids, run
        return scan

    def _read_shard(self, path: Path) -> tuple[list[str], dict[str, Any] | None]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        names = set(pf.schema_arrow.names)
        need = self.schema().names if self.schema else ["id"]
        missing = [n for n in need if n not in names]
        if missing:
            raise ConfigError(f"not a results shard (no column {missing[0]!r})")
        raw = (pf.schema_arrow.metadata or {}).get(RUN_KEY)
        try:
            run = json.loads(raw) if raw else None
        except ValueError:
            run = False
        whole = isinstance(run, dict) and isinstance(run.get("identity"), dict)
        if run is not None and not whole:
            raise ConfigError("its run record is damaged")
        ids = [str(i) for i in pf.read(columns=["id"]).column("id").to_pylist()]
        return ids, run

    def _set_aside(self, scan: Scan) -> None:
        """Move what cannot be used to ``_damaged/`` (kept for a look, out of the way)."""
        for path, why in scan.damaged.items():
            dest = self.root / DAMAGED / path.name
            (self.root / DAMAGED).mkdir(exist_ok=True)
            if dest.exists():
                dest = dest.with_name(f"{path.stem}-{uuid.uuid4().hex[:6]}{path.suffix}")
            os.replace(path, dest)
            self.set_aside.append(path.name)
            self.say(f"set aside shard {path.name} ({why}) in {DAMAGED}/; its rows are redone")

    def redo_failed(self, column: str) -> int:
        """Rewrite each shard that has rows with no ``column`` (inputs that failed: a server
        that went away, an unreadable file) without them, so this run does them again, as a
        rerun of an evaluation does. Each shard is replaced whole under its own name, its
        run record kept, so a kill leaves either the old shard or the new one. Returns how
        many rows go back to be redone."""

        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        redone = 0
        for path in self.shards():
            try:  # the one column first: most shards have no failed row and stay unread
                if not pq.read_table(path, columns=[column]).column(column).null_count:
                    continue
                table = pq.read_table(path)
            except (OSError, KeyError, pa.ArrowException):  # no such column, or damaged
                continue  # (the scan sets a damaged shard aside)
            kept = table.filter(pc.is_valid(table.column(column)))
            redone += table.num_rows - kept.num_rows
            if kept.num_rows:
                write_parquet(path, kept)
            else:
                path.unlink()
        self._done = None
        return redone

    def done_ids(self) -> set[str]:
        if self._done is not None:
            return set(self._done)
        scan = self.scan()
        return {i for ids in scan.ids.values() for i in ids}

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        with self._mutex:
            if rows and not self.buffer:
                self._arm()
            self.buffer.extend(rows)
            while len(self.buffer) >= self.shard_size:
                self.write_shard(self.buffer[: self.shard_size])
                self.buffer = self.buffer[self.shard_size :]
                if self.buffer:
                    self._arm()

    def flush(self) -> None:
        with self._mutex:
            if self._timer is not None:
                self._timer.cancel()
            if self.buffer:
                self.write_shard(self.buffer)
                self.buffer = []

    def _arm(self) -> None:
        """Flush in ``flush_seconds`` unless a full shard goes first: a timer, not a check in
        ``write``, because the next batch may be slower than the interval."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = threading.Timer(self.flush_seconds, self._due)
        self._timer.daemon = True
        self._timer.start()

    def _due(self) -> None:
        try:
            self.flush()
        except Exception as e:  # the rows stay buffered; the run's own flush says why
            self.say(f"could not write a shard yet ({e}); its rows stay buffered")

    def _name(self) -> Path:
        """The next shard's name: numbered in the folder's order, and this writer's own."""
        if self.next is None:
            found = [SHARD.fullmatch(p.name) for p in self.shards()]
            self.next = max((int(m.group(1)) + 1 for m in found if m), default=0)
        n, self.next = self.next, self.next + 1
        return self.root / f"part-{n:06d}-{self.token}.parquet"

    def write_shard(self, rows: Sequence[dict[str, Any]]) -> Path | None:
        if not rows:
            return None

        self.root.mkdir(parents=True, exist_ok=True)
        path = self._name()
        write_parquet(path, make_table(rows, self.schema, self.run), crash="shard")
        self.written.append(path)
        crash_point("rows", len(rows))
        return path

    def rows(self, columns: Sequence[str] | None = None) -> Any:
        """All rows as one pyarrow table; a damaged shard is skipped with a warning (a run
        sets it aside and redoes its rows)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        scan = self.scan()
        for path, why in scan.damaged.items():
            self.say(f"skipped damaged shard {path.name} ({why}); the next run redoes its rows")
        tables = []
        for path in scan.ids:
            try:
                tables.append(pq.read_table(path, columns=columns))
            except FileNotFoundError:  # set aside meanwhile by a run
                continue
            except (OSError, ValueError, pa.ArrowException):
                self.say(f"skipped shard {path.name} (its rows cannot be read)")
        if not tables:
            return self.schema().empty_table() if self.schema else pa.table({})
        return pa.concat_tables(t.replace_schema_metadata(None) for t in tables)


def make_table(
    rows: Sequence[dict[str, Any]], schema: Callable[[], Any] | None, run: dict[str, Any] | None
) -> Any:
    """Rows as a pyarrow table of ``schema``, stamped with the run that made them
    (``RUN_KEY``), so a folder whose manifest is lost still says what its rows are."""
    import pyarrow as pa

    table = pa.Table.from_pylist(list(rows), schema=schema() if schema else None)
    if run is not None:
        meta = {**(table.schema.metadata or {}), RUN_KEY: json.dumps(run).encode()}
        table = table.replace_schema_metadata(meta)
    return table


def write_parquet(path: Path, table: Any, crash: str | None = None) -> None:
    """``table`` as ``path``, whole or not at all (``writer.atomic_write``)."""
    import io

    import pyarrow.parquet as pq

    sink = io.BytesIO()
    pq.write_table(table, sink)
    atomic_write(path, sink.getvalue(), crash=crash)


def _shards_doc(scan: Scan) -> dict[str, Any] | None:
    """A manifest from what the (first) shard says about its run; no runs listed."""
    runs = [r for r in scan.runs.values() if r]
    return {"identity": runs[0]["identity"], "params": runs[0].get("params", {}), "runs": []} \
        if runs else None  # fmt: skip


def is_unit_shard(path: Path) -> bool:
    return path.name.startswith(UNIT_PREFIX)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1
