"""Making finished rows durable, and the crash points the tests kill the process at.

Every writer has the same interface: ``done_ids()`` (what a rerun skips), ``write(rows)``
(durable when it returns, or buffered until ``flush``), ``flush()``. Two formats:

* ``ShardWriter`` (``shards.py``): Parquet shards written to a hidden temporary name and
  renamed, with a manifest; annotation's results folder.
* ``JsonlWriter`` (here): JSON lines appended, flushed and fsynced batch by batch to one or more
  files that users read as they are (rationales and their rejected file, evaluation's
  predictions). A crash can leave half a line; the next run drops it (rewriting the file to a
  temporary name and renaming it), as it drops rows the caller wants redone.

Before a run writes into a folder it claims it (``claim``): the folder is made and checked
writable, so a folder that cannot be written is refused with one line before any work, and
locked, so a second run into the same folder is refused instead of mixing its rows in. The lock
is ``flock`` on ``<folder>/.lock``: the kernel releases it when the process ends however it
ends, so a killed run never leaves a folder locked.

``LLAVAGUARD_TEST_CRASH`` makes a process kill itself with SIGKILL at a chosen point, for the
tests: ``rows:N`` once N rows are durable, ``shard:N`` before the Nth shard's rename (its
temporary file written and fsynced), ``batch:N`` once the Nth batch was handed to the writer
(durable or not: what a kill at that moment keeps is the writer's doing).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from llavaguard.errors import ConfigError

CRASH_ENV = "LLAVAGUARD_TEST_CRASH"
LOCK = ".lock"
_events = {"rows": 0, "shard": 0, "batch": 0}


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


def _why(e: OSError) -> str:
    return (e.strerror or str(e)).lower()


def check_writable(folder: Path) -> None:
    """Make ``folder`` (and its parents) and prove a file can be written in it, or say in one
    line why not: a run that finds out only when its first shard is due has done work in vain."""
    folder = Path(folder)
    for above in [folder, *folder.parents]:
        if above.exists() or above.is_symlink():
            if not above.is_dir():
                where = "is a file" if above == folder else f"is under {above}, a file"
                raise ConfigError(f"output folder {folder} {where}, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as e:
        raise ConfigError(f"output folder {folder} cannot be written ({_why(e)})") from None


class FolderLock:
    """One run at a time in a folder: an exclusive ``flock`` on ``<folder>/.lock`` (a name
    Parquet readers skip), held until ``release`` or until the process ends. The holder's pid
    is written into the file for the refusal's message."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK
        self.file: IO[str] | None = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # no flock (Windows): runs are not guarded against each other
            return
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held while the run lasts)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise ConfigError(
                f"{self.path.parent} is in use by another run{by}; wait for it to end or "
                "use another output folder"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        self.file = f

    def release(self) -> None:
        if self.file is not None:
            with contextlib.suppress(OSError):
                self.file.truncate(0)
            self.file.close()  # closing the file releases the flock
            self.file = None


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
