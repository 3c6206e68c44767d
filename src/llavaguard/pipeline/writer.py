"""Making finished rows durable, and the crash points the tests kill the process at.

Every writer has the same interface: ``done_ids()`` (what a rerun skips), ``write(rows)``
(durable when it returns, or buffered until ``flush``), ``flush()``. Two formats:

* ``ShardWriter`` (``shards.py``): Parquet shards written to a hidden temporary name and
  renamed, with a manifest; annotation's results folder.
* ``JsonlWriter`` (here): JSON lines appended, flushed and fsynced batch by batch to one or more
  files that users read as they are (rationales and their rejected file, evaluation's
  predictions). A crash can leave half a line; the next run drops it (rewriting the file to a
  temporary name and renaming it), as it drops rows the caller wants redone.

``LLAVAGUARD_TEST_CRASH`` makes a process kill itself with SIGKILL at a chosen point, for the
tests: ``rows:N`` once N rows are durable, ``shard:N`` before the Nth shard's rename (its
temporary file written and fsynced).
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

CRASH_ENV = "LLAVAGUARD_TEST_CRASH"
_events = {"rows": 0, "shard": 0}


def crash_point(event: str, n: int = 1) -> None:
    """Count ``n`` events of a kind; die here if ``LLAVAGUARD_TEST_CRASH`` says so."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    _events[event] = _events.get(event, 0) + n
    kind, _, at = spec.partition(":")
    if kind == event and _events[event] >= int(at):
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: Path, data: bytes, crash: str | None = None) -> None:
    """``path`` holds ``data`` whole, or what it held before. ``crash``: the crash point
    between writing and renaming."""
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if crash is not None:
        crash_point(crash)
    os.replace(tmp, path)


class Writer(Protocol):
    def done_ids(self) -> set[str]: ...
    def write(self, rows: Sequence[dict[str, Any]]) -> None: ...
    def flush(self) -> None: ...


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], bool]:
    """The rows of a JSONL file, and whether a line was cut off (by a crash mid-write)."""
    if not path.exists():
        return [], False
    rows, cut = [], False
    for line in path.read_text(encoding="utf-8").splitlines(keepends=True):
        try:
            row = json.loads(line) if line.endswith("\n") else None
        except ValueError:
            row = None
        if isinstance(row, dict) and "id" in row:
            rows.append(row)
        elif line.strip():
            cut = True
    return rows, cut


class JsonlWriter:
    """Rows appended to ``files`` (name -> path), the file chosen by ``route(row)``.

    On opening, each file's rows go through ``check`` (which raises to refuse a file made with
    other settings) and ``keep`` (False: redo that row); cut lines and rows not kept leave the
    file. ``done_ids`` are the ids kept.
    """

    def __init__(
        self,
        files: dict[str, Path],
        route: Callable[[dict[str, Any]], str] | None = None,
        *,
        keep: Callable[[dict[str, Any]], bool] = lambda row: True,
        check: Callable[[Path, dict[str, Any]], None] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.files = {k: Path(p) for k, p in files.items()}
        self.route = route or (lambda row: next(iter(self.files)))
        self.kept: dict[str, list[dict[str, Any]]] = {}
        for name, path in self.files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            if overwrite:
                path.unlink(missing_ok=True)
            self.kept[name] = self._resume(path, keep, check)
        self._open: dict[str, Any] = {}

    @staticmethod
    def _resume(path: Path, keep: Callable, check: Callable | None) -> list[dict[str, Any]]:
        rows, cut = read_jsonl(path)
        for row in rows:
            if check is not None:
                check(path, row)
        kept = [r for r in rows if keep(r)]
        if cut or len(kept) < len(rows):
            atomic_write(path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        return kept

    def rows(self, name: str | None = None) -> list[dict[str, Any]]:
        """The rows kept from earlier runs (of one file, or all)."""
        names: Iterable[str] = [name] if name else self.files
        return [r for n in names for r in self.kept[n]]

    def done_ids(self) -> set[str]:
        return {str(r["id"]) for r in self.rows()}

    def write(self, rows: Sequence[dict[str, Any]]) -> None:
        touched = set()
        for row in rows:
            name = self.route(row)
            if name not in self._open:
                self._open[name] = self.files[name].open("a", encoding="utf-8")
            self._open[name].write(json.dumps(row) + "\n")
            touched.add(name)
        for name in touched:
            self._open[name].flush()
            os.fsync(self._open[name].fileno())
        crash_point("rows", len(rows))

    def flush(self) -> None:
        for f in self._open.values():
            f.close()
        self._open = {}
