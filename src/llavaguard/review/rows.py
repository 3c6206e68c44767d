"""The rows under review, queried where they lie: an annotation results folder (its Parquet
shards, local or Ray) or an ``assess`` JSONL file, through DuckDB, so a million rows open at
once: only the page asked for is read into Python.

Filters (rating, category, score range, valid, errors, reviewed) and the order (by P(Unsafe),
by uncertainty: closest to the threshold first, or by id) are SQL the page's query string
builds through ``Query``, a typed model: nothing a request sends is pasted into SQL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llavaguard.errors import ConfigError

COLUMNS = (
    "id",
    "key",
    "rating",
    "category",
    "score",
    "valid",
    "error",
    "rationale",
    "category_scores",
)


class Query(BaseModel):
    """One page's question: filters, order and window."""

    model_config = ConfigDict(extra="forbid")

    rating: Literal["Safe", "Unsafe", "none"] | None = None  # none: no rating (failed)
    category: str | None = None
    score_min: float | None = Field(None, ge=0, le=1)
    score_max: float | None = Field(None, ge=0, le=1)
    valid: bool | None = None
    errors: bool | None = None  # True: only rows with an error; False: only without
    reviewed: bool | None = None
    sort: Literal["score", "uncertainty", "id"] = "score"
    threshold: float = Field(0.5, ge=0, le=1)
    offset: int = Field(0, ge=0)
    limit: int = Field(50, ge=1, le=500)


@dataclass
class Page:
    rows: list[dict[str, Any]]
    total: int  # rows that pass the filters, on every page


class ReviewRows:
    """Rows of one results folder or JSONL file; each query reads only what it needs."""

    def __init__(self, path: Path) -> None:
        import duckdb

        self.path = Path(path)
        self.db = duckdb.connect()
        try:
            self.db.execute(f"CREATE VIEW results AS SELECT * FROM {_reader(self.path)}")
            have = {r[0] for r in self.db.execute("DESCRIBE results").fetchall()}
        except duckdb.Error as e:  # not JSON lines, no image column, a damaged shard
            why = str(e).splitlines()[0]
            raise ConfigError(f"{self.path}: not results to review ({why})") from None
        missing = [c for c in ("id", "rating") if c not in have]
        if missing:
            raise ConfigError(f"{self.path}: not results to review (no column {missing[0]!r})")
        self.columns = [c for c in COLUMNS if c in have]
        self.lock = threading.Lock()  # one DuckDB connection; the server asks from threads

    def page(self, query: Query, reviewed: Iterable[str] = ()) -> Page:
        """The rows of one page and how many pass the filters; ``reviewed``: the ids that
        have a correction (for the reviewed filter)."""
        with self.lock:
            return self._page(query, list(reviewed))

    def _page(self, query: Query, reviewed: list[str]) -> Page:
        import pyarrow as pa

        self.db.register("reviewed", pa.table({"id": pa.array(reviewed, pa.string())}))
        where, args = _where(query)
        total = self.db.execute(f"SELECT count(*) FROM results {where}", args).fetchone()[0]
        cols = ", ".join(self.columns)
        sql = (f"SELECT {cols} FROM results {where} ORDER BY {_order(query)} "
               f"LIMIT {query.limit} OFFSET {query.offset}")  # fmt: skip
        cur = self.db.execute(sql, [*args, *_order_args(query)])
        names = [d[0] for d in cur.description]
        return Page([dict(zip(names, r, strict=True)) for r in cur.fetchall()], total)

    def lookup(self, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The rows of these ids, by id (for the reviewed items: few)."""
        import pyarrow as pa

        wanted = pa.table({"id": pa.array(list(ids), pa.string())})
        cols = ", ".join(self.columns)
        with self.lock:
            self.db.register("wanted", wanted)
            cur = self.db.execute(f"SELECT {cols} FROM results WHERE id IN (SELECT id FROM wanted)")
            names = [d[0] for d in cur.description]
            found = cur.fetchall()
        return {r[0]: dict(zip(names, r, strict=True)) for r in found}

    def close(self) -> None:
        self.db.close()


def _reader(path: Path) -> str:
    """The DuckDB table function over ``path`` (a quoted literal: paths are ours, not the
    request's, but a quote in a folder name must not break the SQL)."""
    quoted = "'" + str(path).replace("'", "''")
    if not path.exists():
        raise ConfigError(f"{path}: not found")
    if path.is_dir():
        if not any(path.glob("part-*.parquet")):
            raise ConfigError(f"{path}: no results shards (part-*.parquet) to review")
        return f"read_parquet({quoted}/part-*.parquet', union_by_name=true)"
    if path.suffix == ".jsonl":  # assess records: the input's id is ``image``, its path too
        return (f"(SELECT image AS id, image AS key, * EXCLUDE (image) FROM "
                f"read_json_auto({quoted}', format='newline_delimited'))")  # fmt: skip
    raise ConfigError(f"{path}: review reads an annotation results folder or an assess .jsonl")


def _where(q: Query) -> tuple[str, list[Any]]:
    parts: list[str] = []
    args: list[Any] = []
    if q.rating == "none":
        parts.append("rating IS NULL")
    elif q.rating is not None:
        parts.append("rating = ?")
        args.append(q.rating)
    for sql, value in (("category = ?", q.category), ("score >= ?", q.score_min),
                       ("score <= ?", q.score_max), ("valid = ?", q.valid)):  # fmt: skip
        if value is not None:
            parts.append(sql)
            args.append(value)
    if q.errors is not None:
        parts.append("error IS NOT NULL" if q.errors else "error IS NULL")
    if q.reviewed is not None:
        parts.append(("" if q.reviewed else "NOT ") + "(id IN (SELECT id FROM reviewed))")
    return ("WHERE " + " AND ".join(parts)) if parts else "", args


def _order(q: Query) -> str:
    """Unscored rows last; ties broken by id, so pages never overlap."""
    if q.sort == "score":
        return "score DESC NULLS LAST, id"
    if q.sort == "uncertainty":
        return "abs(score - ?) ASC NULLS LAST, id"
    return "id"


def _order_args(q: Query) -> list[Any]:
    return [q.threshold] if q.sort == "uncertainty" else []


def read_key(key: str) -> bytes:
    """The bytes of a row's image by its ``key``: its file, or its member of a tar shard
    (``shard.tar:member``); the page and the export both read images this one way."""
    import tarfile

    shard, sep, member = key.rpartition(":")
    if sep and shard.endswith(".tar"):
        with tarfile.open(shard) as tar:
            f = tar.extractfile(member)
            if f is None:
                raise ConfigError(f"{key}: not a file in its shard")
            return f.read()
    with open(key, "rb") as f:
        return f.read()
