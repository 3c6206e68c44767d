"""The one reader of tables: CSV, JSONL, a JSON list and Parquet, as a stream of row dicts.

Sources (a table of image paths), labelled sets and ``dataset import`` all read their rows
here, so the formats a user may hand in are the same everywhere and a bad row is reported the
same way: one line naming the file and the row. Rows are streamed (Parquet in record batches,
CSV and JSONL line by line), so a table larger than memory can be read; only a JSON list is
read whole, as JSON gives no way to stream it with the standard library.

CSV is read with the standard library rather than pyarrow.csv on purpose: every cell stays the
string the user wrote (an id ``007`` stays ``007``; pyarrow would infer a number). Text files
are decoded as ``utf-8-sig``: spreadsheet programs start a CSV with a byte-order mark, which
plain ``utf-8`` keeps as part of the first column's name (``\ufeffid``), so the ``id`` column
silently went missing.

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
# a leading byte-order mark is dropped, not read as part of the first column's name
ENCODING = "utf-8-sig"


def row_where(path: str | Path, n: int) -> str:
    """How an error names row ``n`` of ``numbered_rows``: ``file:n`` (a line) for line-based
    files, else ``file row n`` (a Parquet file or JSON list has no lines to go to)."""
    whole = str(path).lower().endswith((".parquet", ".json"))  # string ops: called per row
    return f"{path} row {n}" if whole else f"{path}:{n}"


def iter_rows(
    path: str | Path, columns: list[str] | None = None, row_group: int | None = None
) -> Iterator[dict[str, Any]]:
    """The rows of a table, one dict each, streamed; ``columns`` limits a Parquet read and
    ``row_group`` reads one row group of a Parquet file (a work unit of its own)."""
    for _, row in numbered_rows(path, columns, row_group):
        yield row


def numbered_rows(
    path: str | Path, columns: list[str] | None = None, row_group: int | None = None
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(where, row) for each row: ``where`` is the line in a CSV or JSONL file (blank lines
    and the header counted, so an editor goes there) and the row number from 1 in a Parquet
    file (or in its ``row_group``, read alone; other formats ignore it) or JSON list;
    ``row_where(path, where)`` says it the way errors do.

    Any suffix other than .csv, .json and .parquet is read as JSONL. A missing file, bad JSON,
    a CSV row with more cells than its header or an unreadable file stops with a ConfigError
    that names the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    suffix = path.suffix.lower()
    try:
        if is_parquet(path):
            yield from enumerate(_parquet(path, columns, row_group), 1)
        elif suffix == ".csv":
            yield from _csv(path)
        elif suffix == ".json":
            yield from enumerate(_json_list(path), 1)
        else:
            yield from _jsonl(path)
    except ConfigError:
        raise
    except Exception as e:  # an unreadable file, whatever the library says: one line
        raise ConfigError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from e


def first_given(row: dict[str, Any], *keys: str) -> Any:
    """The value of the first of ``keys`` that the row gives: None and "" are not given, but
    0 and False are (an id ``0`` is an id)."""
    for key in keys:
        value = row.get(key)
        if value is not None and value != "":
            return value
    return None


def shown(value: Any, limit: int = 60) -> str:
    """A cell as an error message shows it: its repr, cut to ``limit`` characters (a cell may
    hold a megabyte), and lists or objects by kind (no Python repr of a structure)."""
    if isinstance(value, dict | list | tuple):
        return "an object" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(newline="", encoding=ENCODING) as f:
        reader = csv.DictReader(f)
        for row in reader:
            if None in row:  # DictReader's place for cells beyond the header
                raise ConfigError(
                    f"{path}:{reader.line_num}: {len(row[None])} more cell(s) than the header "
                    f"has ({len(reader.fieldnames or [])} columns)"
                )
            yield reader.line_num, row


def is_parquet(path: str | Path) -> bool:
    """Whether ``numbered_rows`` reads ``path`` as Parquet (by its suffix, any case)."""
    return Path(path).suffix.lower() == ".parquet"


def row_group_sizes(path: str | Path) -> list[int]:
    """The rows in each row group of a Parquet file, from its footer alone (no data is read),
    so a huge table can be split into work units cheaply; one line for an unreadable file."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path).metadata
    except Exception as e:  # whatever the library says: one line
        raise ConfigError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from e
    return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]


def _parquet(
    path: Path, columns: list[str] | None, row_group: int | None
) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    groups = None if row_group is None else [row_group]
    reader = pq.ParquetFile(path)
    for batch in reader.iter_batches(batch_size=_BATCH, columns=columns, row_groups=groups):
        yield from batch.to_pylist()


def _json_list(path: Path) -> Iterator[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding=ENCODING))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}:{e.lineno}: invalid JSON: {e.msg}") from e
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise ConfigError(f"{path}: a JSON file must hold a list of objects")
    yield from data


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open(encoding=ENCODING) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{i}: invalid JSON: {e.msg}") from e
            if not isinstance(row, dict):
                raise ConfigError(f"{path}:{i}: each line must be a JSON object")
            yield i, row
