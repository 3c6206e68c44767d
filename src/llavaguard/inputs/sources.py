"""Where images come from: a folder tree, a list of paths, a table with a path column,
WebDataset / img2dataset tar shards, or a Hugging Face datasets folder / Parquet with an image
column. Every source streams ``Item``s (never the whole dataset in memory) in a stable order,
each with a stable id, so a rerun can skip what is done.

A source yields what to read, not decoded images: decoding happens ahead of the model in the
pipeline, and a bad member becomes an error row there, not an exception here.
"""

from __future__ import annotations

import codecs
import glob
import itertools
import os
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from llavaguard.errors import ConfigError
from llavaguard.inputs.images import IMAGE_EXTENSIONS, expand_paths
from llavaguard.inputs.tables import iter_rows, row_group_sizes
from llavaguard.registry import Registry


@dataclass(frozen=True)
class Item:
    """One input: ``id`` is unique within the source; ``data`` is bytes or a path."""

    id: str
    key: str  # where it came from, for people: a path, "shard.tar:000010005", a row number
    data: bytes | str
    error: str | None = None  # the source could not even produce bytes (member unreadable)


_CHUNK = 1 << 20  # bytes of a path list read at a time

SourceReader = Callable[[list[str], dict[str, Any]], Iterator[Item]]
SOURCES: Registry[SourceReader] = Registry("source", also=("auto",))
_source = SOURCES.register


@_source("folder")
def folder(paths: list[str], options: dict[str, Any]) -> Iterator[Item]:
    """Image files under folders (recursive, sorted); files given directly are taken as is.
    The id is the path relative to its folder argument, so moving the tree keeps ids."""
    for arg in paths:
        yield from folder_items(arg, expand_paths([arg]))


def folder_items(arg: str, files: Iterable[Path]) -> Iterator[Item]:
    """The items of ``files`` found under the folder argument ``arg`` (or ``arg`` itself, a
    file given directly): one place that says what a file's id is, for the whole source and
    for a work unit that holds a chunk of the listing."""
    base = Path(arg)
    is_folder = base.is_dir()
    for p in files:
        rel = os.path.relpath(p, base) if is_folder else str(p)
        yield Item(id=rel, key=str(p), data=str(p))


@_source("list")
def path_list(paths: list[str], options: dict[str, Any]) -> Iterator[Item]:
    """Text files with one image path a line (relative to the list's folder); blank lines and
    lines starting with # are skipped."""
    for arg in paths:
        yield from list_items(arg)


def list_items(arg: str, start: int = 0, end: int | None = None) -> Iterator[Item]:
    """The items of the lines of the path list ``arg`` from byte ``start`` (a line start) up to
    byte ``end``: the whole list, or the byte range of one work unit."""
    base = Path(arg).parent
    for _, line in list_lines(arg, start, end):
        if line is not None:
            path = line if os.path.isabs(line) else str(base / line)
            yield Item(id=line, key=path, data=path)


def list_lines(
    arg: str, start: int = 0, end: int | None = None
) -> Iterator[tuple[int, str | None]]:
    """(byte offset just past the line, the path it names or None for a blank or # line) for
    each line of a path list from ``start`` to ``end``. Read as bytes so that offsets are exact
    (work units are byte ranges), and split where text mode splits (LF, CR LF or a lone CR); a
    byte-order mark at the start is no part of a path."""
    with open(arg, "rb") as f:
        f.seek(start)
        if start != 0 or f.read(len(codecs.BOM_UTF8)) != codecs.BOM_UTF8:
            f.seek(start)
        for pos, lines in _line_blocks(f, end):
            for raw in lines:
                try:
                    line = raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    raise ConfigError(f"{arg}: line at byte {pos} is not UTF-8 text") from None
                pos += len(raw)
                yield pos, (line if line and not line.startswith("#") else None)


def _line_blocks(f: BinaryIO, end: int | None) -> Iterator[tuple[int, list[bytes]]]:
    """(offset of the first, whole lines) from the file's position up to byte ``end``, a chunk
    at a time (a list of a billion lines is never held; lines in blocks, as a generator step
    per line cost a third of the time). A CR LF cut by a chunk's end reads as a line and a
    blank one, which is the same paths."""
    pos, rest = f.tell(), b""
    while True:
        want = _CHUNK if end is None else min(_CHUNK, end - pos - len(rest))
        chunk = f.read(want) if want > 0 else b""
        if not chunk:
            if rest:
                yield pos, [rest]
            return
        lines = (rest + chunk).splitlines(keepends=True)  # bytes split at LF, CR LF and CR
        rest = b"" if lines[-1].endswith((b"\n", b"\r")) else lines.pop()
        yield pos, lines
        pos += sum(map(len, lines))


@_source("table")
def table(paths: list[str], options: dict[str, Any]) -> Iterator[Item]:
    """CSV, JSONL or Parquet with a path column (``--path-column``, default ``path``; relative paths
    are relative to the table's folder) and an optional id column (``--id-column``)."""
    for arg in paths:
        yield from table_items(arg, iter_rows(arg), 1, options)


def table_items(
    arg: str, rows: Iterable[dict[str, Any]], first: int, options: dict[str, Any]
) -> Iterator[Item]:
    """The items of ``rows`` of the table ``arg``, numbered from ``first`` (a row with no path
    is the error item ``arg:n``, so a row group read alone must know where it starts)."""
    path_col = options.get("path_column") or "path"
    id_col = options.get("id_column")
    base = Path(arg).parent
    for n, row in enumerate(rows, first):
        if path_col not in row:
            raise ConfigError(f"{arg}: no column {path_col!r} (columns: {', '.join(row)})")
        value = row[path_col]
        if value in (None, ""):
            yield Item(id=f"{arg}:{n}", key=f"{arg}:{n}", data=b"", error="empty path")
            continue
        path = str(value) if os.path.isabs(str(value)) else str(base / str(value))
        item_id = str(row[id_col]) if id_col and row.get(id_col) not in (None, "") else value
        yield Item(id=str(item_id), key=path, data=path)


def tar_shards(paths: list[str]) -> list[str]:
    """The tar files that ``paths`` name: files, folders of *.tar, or globs, each sorted."""
    out: list[str] = []
    for arg in paths:
        if os.path.isdir(arg):
            out += sorted(glob.glob(os.path.join(arg, "*.tar")))
        elif any(c in arg for c in "*?["):
            out += sorted(glob.glob(arg))
        else:
            out.append(arg)
    if not out:
        raise ConfigError(f"no tar shards found in {', '.join(paths)}")
    return out


@_source("webdataset")
def webdataset(paths: list[str], options: dict[str, Any]) -> Iterator[Item]:
    """WebDataset / img2dataset tar shards (files, folders of *.tar, or globs): one item per
    key with an image member (``000010005.jpg`` beside ``000010005.json``). The id is
    ``shard-name/key``; a shard that cannot be read gives one error item and the rest go on."""
    for shard in tar_shards(paths):
        yield from tar_items(shard)


def tar_items(shard: str) -> Iterator[Item]:
    """The items of one tar shard, streamed (never all members); a shard that breaks gives the
    items before the break and then one ``<shard>`` error item."""
    name = Path(shard).stem
    try:
        with tarfile.open(shard, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                stem, ext = os.path.splitext(member.name)
                if ext.lower() not in IMAGE_EXTENSIONS:
                    continue
                item_id = f"{name}/{stem}"
                key = f"{shard}:{member.name}"
                f = tar.extractfile(member)
                if f is None:
                    yield Item(id=item_id, key=key, data=b"", error="unreadable member")
                    continue
                yield Item(id=item_id, key=key, data=f.read())
    except (tarfile.TarError, OSError, EOFError) as e:
        yield Item(id=f"{name}/<shard>", key=shard, data=b"",
                   error=f"tar shard unreadable: {e.__class__.__name__}: {e}")  # fmt: skip


@_source("hf")
def hf_dataset(paths: list[str], options: dict[str, Any]) -> Iterator[Item]:
    """A Hugging Face ``datasets`` folder (``save_to_disk``) or Parquet files with an image
    column (``--image-column``, default ``image``: a datasets Image struct with bytes and/or a
    path, raw bytes, or a path). Ids from ``--id-column`` or the row number."""
    for arg in paths:
        numbers = itertools.count(1)  # row numbers run on across the files of one argument
        for path in hf_files(arg):
            yield from hf_items(arg, path, hf_rows(path), numbers, options)


def hf_files(arg: str) -> list[str]:
    """The data files of a datasets argument: a folder's .arrow then .parquet files, each
    sorted, or the file itself."""
    if not os.path.isdir(arg):
        return [arg]
    files = sorted(glob.glob(os.path.join(arg, "**", "*.arrow"), recursive=True))
    files += sorted(glob.glob(os.path.join(arg, "**", "*.parquet"), recursive=True))
    if not files:
        raise ConfigError(f"{arg}: no .arrow or .parquet files (a datasets folder?)")
    return files


def hf_items(
    arg: str,
    path: str,
    rows: Iterable[dict[str, Any]],
    numbers: Iterator[int],
    options: dict[str, Any],
) -> Iterator[Item]:
    """The items of ``rows`` of the data file ``path`` of argument ``arg``, numbered from
    ``numbers`` (shared by the files of one argument, or started where a work unit starts)."""
    col = options.get("image_column") or "image"
    id_col = options.get("id_column")
    # rows first: when they end, no number is taken from the count the next file goes on with
    for row, n in zip(rows, numbers, strict=False):
        if col not in row:
            raise ConfigError(f"{path}: no column {col!r} (columns: {', '.join(row)})")
        item_id = str(row[id_col]) if id_col and row.get(id_col) is not None else str(n)
        data, error = _image_value(row[col], Path(path).parent)
        yield Item(id=item_id, key=f"{Path(arg).name}:{n}", data=data, error=error)


def hf_rows(path: str, row_group: int | None = None) -> Iterator[dict[str, Any]]:
    """The rows of a datasets data file: Parquet (one row group of it, if given) or Arrow."""
    if path.endswith(".parquet"):
        yield from iter_rows(path, row_group=row_group)
        return
    for batch in arrow_batches(path):
        yield from batch.to_pylist()


def hf_parts(path: str) -> list[tuple[int | None, int]]:
    """(row group, or None for the whole file; its rows) for each piece of a datasets data file
    that can be read alone, from metadata only (no image is read): a Parquet file's row groups,
    an Arrow file whole (its record batches sit in one stream)."""
    if path.endswith(".parquet"):
        return list(enumerate(row_group_sizes(path)))
    try:
        return [(None, sum(batch.num_rows for batch in arrow_batches(path)))]
    except Exception as e:  # whatever the library says: one line
        raise ConfigError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from e


def arrow_batches(path: str) -> Iterator[Any]:
    """The record batches of an Arrow file (stream or file format), memory-mapped: a batch's
    ``num_rows`` is read without touching its images."""
    import pyarrow as pa

    with pa.memory_map(path) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
            return
        yield from reader


def _image_value(value: Any, base: Path) -> tuple[bytes | str, str | None]:
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"]), None
        if value.get("path"):
            p = value["path"]
            return (p if os.path.isabs(p) else str(base / p)), None
        return b"", "image column has neither bytes nor a path"
    if isinstance(value, bytes | bytearray):
        return bytes(value), None
    if isinstance(value, str) and value:
        return (value if os.path.isabs(value) else str(base / value)), None
    return b"", "empty image value"


def detect(paths: list[str]) -> str:
    """The source kind the paths look like (the first one decides)."""
    first = paths[0]
    low = first.lower()
    if os.path.isdir(first):
        if glob.glob(os.path.join(first, "*.tar")):
            return "webdataset"
        if os.path.exists(os.path.join(first, "dataset_info.json")) or glob.glob(
            os.path.join(first, "**", "*.arrow"), recursive=True
        ):
            return "hf"
        return "folder"
    if low.endswith(".tar") or (any(c in first for c in "*?[") and ".tar" in low):
        return "webdataset"
    if low.endswith((".txt", ".lst")):
        return "list"
    if low.endswith((".csv", ".jsonl", ".parquet")):
        return "table"
    return "folder"  # image files given one by one


def read_source(paths: list[str], kind: str = "auto", **options: Any) -> Iterator[Item]:
    """Items of the named source kind (``auto``: guessed from the first path)."""
    kind = checked_kind(paths, kind)
    return SOURCES.get(kind)(paths, options)


def checked_kind(paths: list[str], kind: str = "auto") -> str:
    """The source kind of ``paths`` (``auto``: guessed), after the checks every reader of them
    makes first: some input, a known kind, every path (but a glob) there. One line each."""
    if not paths:
        raise ConfigError("no input given")
    if kind == "auto":
        kind = detect(paths)
    SOURCES.get(kind)
    for p in paths:
        if not any(c in p for c in "*?[") and not os.path.exists(p):
            raise ConfigError(f"{p}: not found")
    return kind


def item_bytes(item: Item) -> bytes:
    """The item's bytes (reading its file); OSError for an unreadable file."""
    if isinstance(item.data, bytes):
        return item.data
    with open(item.data, "rb") as f:
        return f.read()


__all__ = ["SOURCES", "Item", "checked_kind", "detect", "item_bytes", "read_source"]
