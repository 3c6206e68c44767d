"""Reviewers' corrections, saved at once in SQLite beside the results (``_review.sqlite``).

Each save is one transaction and carries the version the reviewer saw: a save over a newer
version (a second reviewer got there first) is refused as a ``Conflict`` with what is there
now, never written over, so no update is lost. Every save and undo is also appended to a log,
so undo restores what was there before, and who changed what, and when, is kept.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llavaguard.errors import ConfigError

FILE = "_review.sqlite"
SCHEMA = """
CREATE TABLE IF NOT EXISTS corrections (
    id TEXT PRIMARY KEY, rating TEXT, category TEXT, reviewer TEXT NOT NULL,
    time REAL NOT NULL, version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, rating TEXT, category TEXT,
    reviewer TEXT NOT NULL, time REAL NOT NULL, version INTEGER NOT NULL);
"""


@dataclass(frozen=True)
class Correction:
    id: str
    rating: str | None  # None: undone back to the model's answer
    category: str | None
    reviewer: str
    time: float
    version: int  # 1 for the first save of an id, +1 for each save or undo after


class Conflict(Exception):
    """Another reviewer saved this item since the version the caller saw."""

    def __init__(self, current: Correction | None) -> None:
        super().__init__(f"{current.id if current else 'item'} was changed by another reviewer")
        self.current = current


class Corrections:
    def __init__(self, root: Path) -> None:
        root = Path(root)
        path = root / FILE if root.is_dir() else root.with_name(f".{root.name}{FILE}")
        try:
            self.db = sqlite3.connect(path, timeout=10, isolation_level=None,
                                      check_same_thread=False)  # fmt: skip
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.executescript(SCHEMA)
        except sqlite3.Error as e:
            raise ConfigError(f"{path}: cannot keep corrections there ({e})") from None
        self.path = path
        self.lock = threading.RLock()  # one connection, asked from the server's threads

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE): a second reviewer's save
        waits for it instead of reading a version that is about to change."""
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def get(self, item: str) -> Correction | None:
        """The item's latest state (its rating None when undone to the model's answer)."""
        with self.lock:
            row = self.db.execute("SELECT * FROM corrections WHERE id = ?", (item,)).fetchone()
        return Correction(*row) if row else None

    def save(self, item: str, rating: str, category: str | None, reviewer: str,
             seen: int = 0) -> Correction:  # fmt: skip
        """Record a correction over version ``seen`` (0: the model's answer, no correction
        yet); ``Conflict`` when the item is at another version now."""
        with self._tx():
            now = self.get(item)
            if (now.version if now else 0) != seen:
                raise Conflict(now)
            done = Correction(item, rating, category, reviewer, time.time(), seen + 1)
            self._put(done)
        return done

    def undo(self, item: str, reviewer: str, seen: int) -> Correction:
        """Take back the change that made version ``seen``: the item gets what it had at
        version ``seen - 1`` (the model's answer, no correction, before the first), as a new
        version; undoing that takes the undo back. ``Conflict`` as for ``save``."""
        with self._tx():
            now = self.get(item)
            if now is None or now.version != seen:
                raise Conflict(now)
            before = self.db.execute(
                "SELECT rating, category FROM log WHERE id = ? AND version = ? AND rating IS NOT"
                " NULL", (item, seen - 1)).fetchone()  # fmt: skip
            rating, category = before or (None, None)  # None: back to the model's answer
            back = Correction(item, rating, category, reviewer, time.time(), seen + 1)
            self._put(back)  # kept with no rating, so versions keep counting up
            return back

    def _put(self, c: Correction) -> None:
        self.db.execute("INSERT OR REPLACE INTO corrections VALUES (?, ?, ?, ?, ?, ?)",
                        (c.id, c.rating, c.category, c.reviewer, c.time, c.version))  # fmt: skip
        self._log(c)

    def _log(self, c: Correction) -> None:
        self.db.execute("INSERT INTO log (id, rating, category, reviewer, time, version) VALUES"
                        " (?, ?, ?, ?, ?, ?)",
                        (c.id, c.rating, c.category, c.reviewer, c.time, c.version))  # fmt: skip

    def many(self, items: list[str]) -> dict[str, Correction]:
        """The latest state of each of ``items`` that has one, in one query."""
        marks = ",".join("?" * len(items))
        with self.lock:
            found = self.db.execute(f"SELECT * FROM corrections WHERE id IN ({marks})", items)
            return {r[0]: Correction(*r) for r in found}

    def ids(self) -> list[str]:
        """The items with a correction in force."""
        with self.lock:
            return [r[0] for r in self.db.execute(
                "SELECT id FROM corrections WHERE rating IS NOT NULL")]  # fmt: skip

    def all(self) -> list[Correction]:
        with self.lock:
            return [Correction(*r) for r in self.db.execute(
                "SELECT * FROM corrections WHERE rating IS NOT NULL ORDER BY id")]  # fmt: skip

    def close(self) -> None:
        self.db.close()
