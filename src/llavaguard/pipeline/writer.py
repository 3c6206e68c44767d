"""Making finished rows durable, and the crash points the tests kill the process at.

Every writer has the same interface: ``done_ids()`` (what a rerun skips), ``write(rows)``
(durable when it returns, or buffered until ``flush``), ``flush()``. Two formats:

* ``ShardWriter`` (``shards.py``): Parquet shards written to a hidden temporary name and
  renamed, with a manifest; annotation's results folder.
* ``JsonlWriter`` (here): JSON lines appended, flushed and fsynced batch by batch to one or more
  files that users read as they are (rationales and their rejected file, evaluation's
  predictions). A crash can leave half a line; the next run drops it (rewriting the file to a
  temporary name and renaming it), as it drops rows the caller wants redone.

Before a writer writes anything, its folder is made and checked writable
(``check_writable``), so a folder that cannot be written is refused with one line before any
work, and locked (``RunLock``), so a second run into the same folder or file is refused instead
of mixing its rows in. The lock is ``flock`` on a hidden lock file: the kernel releases it when
the process ends however it ends, so a killed run never leaves anything locked.

``LLAVAGUARD_TEST_CRASH`` makes a process kill itself with SIGKILL at a chosen point, for the
tests: ``rows:N`` once N rows are durable, ``shard:N`` before the Nth shard's rename (its
temporary file written and fsynced), ``work:N`` in a Ray worker with its Nth unit made but not
written, ``poison:<unit>`` in every Ray worker that starts that unit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Protocol

from llavaguard.errors import ConfigError

CRASH_ENV = "LLAVAGUARD_TEST_CRASH"
LOCK = ".lock"
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


def poison_point(name: str) -> None:
    """Die here if ``LLAVAGUARD_TEST_CRASH`` is ``poison:<name>``: a unit that kills every
    worker that reads it, as a decoder crash on a corrupt file would."""
    if os.environ.get(CRASH_ENV) == f"poison:{name}":
        os.kill(os.getpid(), signal.SIGKILL)


def atomic_write(path: Path, data: bytes, crash: str | None = None) -> None:
    """``path`` holds ``data`` whole, or what it held before. ``crash``: the crash point
    between writing and renaming. The temporary name is the writer's own, so two processes
    writing the same file (a unit redone while its first worker still runs) never mix bytes."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:6]}.tmp")
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


_held: dict[str, list[Any]] = {}  # lock file -> [its open file, holders]: one flock a process
_held_mutex = threading.Lock()


class RunLock:
    """One run at a time writes a folder or file: an exclusive ``flock`` on a lock file (a
    hidden name: Parquet readers skip it), held until ``release`` or until the process ends.
    Another process is refused; this process may hold it more than once (one flock, counted).
    The holder's pid is written into the file for the refusal's message."""

    def __init__(self, lock: Path, subject: Path) -> None:
        self.path, self.subject = Path(lock), Path(subject)
        self.key: str | None = None

    @classmethod
    def folder(cls, folder: Path) -> RunLock:
        return cls(Path(folder) / LOCK, folder)

    @classmethod
    def file(cls, path: Path) -> RunLock:
        path = Path(path)
        return cls(path.with_name(f".{path.name}{LOCK}"), path)

    def acquire(self) -> None:
        key = os.path.realpath(self.path)
        with _held_mutex:
            if key not in _held:
                f = self._flock()
                if f is None:  # no flock (Windows): runs are not guarded against each other
                    return
                _held[key] = [f, 0]
            _held[key][1] += 1
            self.key = key

    def _flock(self) -> IO[str] | None:
        try:
            import fcntl
        except ImportError:
            return None
        f = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held while the run lasts)
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip()
            f.close()
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise ConfigError(
                f"{self.subject} is in use by another run{by}; wait for it to end or use "
                "another output"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        return f

    def release(self) -> None:
        with _held_mutex:
            if self.key is None or self.key not in _held:
                return
            entry = _held[self.key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[self.key]
                with contextlib.suppress(OSError):
                    entry[0].truncate(0)
                entry[0].close()  # closing the file releases the flock
            self.key = None


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
    """Rows appended to ``files`` (name -> path), the file chosen by ``route(row)``. The files
    are checked writable and locked (``RunLock.file``) for as long as the writer lives.

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
        first = next(iter(self.files))
        self.route = route or (lambda row: first)  # not self: no cycle keeps the locks held
        self.kept: dict[str, list[dict[str, Any]]] = {}
        self.locks = [RunLock.file(path) for path in self.files.values()]
        self._release = weakref.finalize(self, _release, self.locks)
        self._open: dict[str, Any] = {}
        try:
            for path, lock in zip(self.files.values(), self.locks, strict=True):
                check_writable(path.parent)
                lock.acquire()
            for name, path in self.files.items():
                if overwrite:
                    path.unlink(missing_ok=True)
                self.kept[name] = self._resume(path, keep, check)
        except BaseException:
            self._release()
            raise

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

    def close(self) -> None:
        """Flush and let the files go (also done when the writer is garbage-collected)."""
        self.flush()
        self._release()


def _release(locks: list[RunLock]) -> None:
    for lock in locks:
        lock.release()
