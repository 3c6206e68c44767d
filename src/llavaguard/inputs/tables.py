"""The one reader of tables: CSV, JSONL, a JSON list and Parquet, as a stream of row dicts.

Sources (a table of image paths), labelled sets and ``dataset import`` all read their rows
here, so the formats a user may hand in are the same everywhere and a bad row is reported the
same way: one line naming the file and the row. Rows are streamed (Parquet in record batches,
CSV and JSONL line by line), so a table larger than memory can be read; only a JSON list is
read whole, as JSON gives no way to stream it with the standard library.

CSV is read with the standard library rather than pyarrow.csv on purpose: every cell stays the
string the user wrote (an id ``007`` stays ``007``; pyarrow would infer a number).

This module knows nothing about what the columns mean.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llavaguard.errors import ConfigError

_BATCH = 1024


def row_where(path: str | Path, n: int) -> str:
    """How an error names row ``n`` (from 1): ``file:n`` for line-based files, else ``file
    row n`` (a Parquet file or JSON list has no lines to go to)."""
    line_based = Path(path).suffix.lower() in {".csv", ".jsonl"}
    return f"{path}:{n}" if line_based else f"{path} row {n}"


def iter_rows(path: str | Path, columns: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """The rows of a table, one dict each, streamed; ``columns`` limits a Parquet read.

    Any suffix other than .csv, .json and .parquet is read as JSONL. A missing file, bad JSON
    or an unreadable file stops with a ConfigError that names the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            yield from _parquet(path, columns)
        elif suffix == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                yield from csv.DictReader(f)
        elif suffix == ".json":
            yield from _json_list(path)
        else:
            yield from _jsonl(path)
    except ConfigError:
        raise
    except Exception as e:  # an unreadable file, whatever the library says: one line
        raise ConfigError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from e


def _parquet(path: Path, columns: list[str] | None) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    for batch in pq.ParquetFile(path).iter_batches(batch_size=_BATCH, columns=columns):
        yield from batch.to_pylist()


def _json_list(path: Path) -> Iterator[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from e
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ConfigError(f"{path}: a JSON file must hold a list of objects")
    yield from data


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{i}: invalid JSON: {e.msg}") from e
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{i}: each line must be a JSON object")
            yield row
