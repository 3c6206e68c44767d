"""Where images come from: a folder tree, a list of paths, a table with a path column,
WebDataset / img2dataset tar shards, or a Hugging Face datasets folder / Parquet with an image
column. Every source streams ``Item``s (never the whole dataset in memory) in a stable order,
each with a stable id, so a rerun can skip what is done.

A source yields what to read, not decoded images: decoding happens ahead of the model in the
pipeline, and a bad member becomes an error row there, not an exception here.
"""

from __future__ import annotations

import glob
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llavaguard.errors import ConfigError
from llavaguard.inputs.images import IMAGE_EXTENSIONS, expand_paths
from llavaguard.inputs.tables import ENCODING, iter_rows
from llavaguard.registry import Registry


@dataclass(frozen=True)
class Item:
    """One input: ``id`` is unique within the source; ``data`` is bytes or a path."""

    id: str
    key: str  # where it came from, for people: a path, "shard.tar:000010005", a row number
    data: bytes | str
    error: str | None = None  # the source could not even produce bytes (member unreadable)


SourceReader = Callable[[list[str], dict[str, Any]], Iterator[Item]]
SOURCES: Registry[SourceReader] = Registry("source", also=("auto",))
_source = SOURCES.register


@_source("folder")
def folder(paths: list[str], options: dict[str, Any]) -> Iterator[Item]:
    """Image files under folders (recursive, sorted); files given directly are taken as is.
    The id is the path relative to its folder argument, so moving the tree keeps ids."""
    for arg in paths:
        base = Path(arg)
        for p in expand_paths([arg]):
            rel = os.path.relpath(p, base) if base.is_dir() else str(p)
            yield Item(id=rel, key=str(p), data=str(p))


@_source("list")
def path_list(paths: list[str], options: dict[str, Any]) -> Iterator[Item]:
    """Text files with one image path a line (relative to the list's folder); blank lines and
    lines starting with # are skipped."""
    for arg in paths:
        base = Path(arg).parent
        with open(arg, encoding=ENCODING) as f:  # a byte-order mark is no part of a path
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    path = line if os.path.isabs(line) else str(base / line)
                    yield Item(id=line, key=path, data=path)


@_source("table")
def table(paths: list[str], options: dict[str, Any]) -> Iterator[Item]:
    """CSV, JSONL or Parquet with a path column (``--path-column``, default ``path``; relative paths
    are relative to the table's folder) and an optional id column (``--id-column``)."""
    path_col = options.get("path_column") or "path"
    id_col = options.get("id_column")
    for arg in paths:
        base = Path(arg).parent
        for n, row in enumerate(iter_rows(arg), 1):
            if path_col not in row:
                raise ConfigError(f"{arg}: no column {path_col!r} (columns: {', '.join(row)})")
            value = row[path_col]
            if value in (None, ""):
                yield Item(id=f"{arg}:{n}", key=f"{arg}:{n}", data=b"", error="empty path")
                continue
            path = str(value) if os.path.isabs(str(value)) else str(base / str(value))
            item_id = str(row[id_col]) if id_col and row.get(id_col) not in (None, "") else value
            yield Item(id=str(item_id), key=path, data=path)


def _shards(paths: list[str]) -> list[str]:
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
    for shard in _shards(paths):
        name = Path(shard).stem
        try:
            with tarfile.open(shard, mode="r|*") as tar:  # streamed: never all members
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
    col = options.get("image_column") or "image"
    id_col = options.get("id_column")
    for arg in paths:
        if os.path.isdir(arg):
            files = sorted(glob.glob(os.path.join(arg, "**", "*.arrow"), recursive=True))
            files += sorted(glob.glob(os.path.join(arg, "**", "*.parquet"), recursive=True))
            if not files:
                raise ConfigError(f"{arg}: no .arrow or .parquet files (a datasets folder?)")
        else:
            files = [arg]
        n = 0
        for path in files:
            for row in _arrow_rows(path):
                n += 1
                if col not in row:
                    raise ConfigError(f"{path}: no column {col!r} (columns: {', '.join(row)})")
                item_id = str(row[id_col]) if id_col and row.get(id_col) is not None else str(n)
                key = f"{Path(arg).name}:{n}"
                data, error = _image_value(row[col], Path(path).parent)
                yield Item(id=item_id, key=key, data=data, error=error)


def _arrow_rows(path: str) -> Iterator[dict[str, Any]]:
    if path.endswith(".parquet"):
        yield from iter_rows(path)
        return
    import pyarrow as pa

    with pa.memory_map(path) as source:
        try:
            reader = pa.ipc.open_stream(source)
        except pa.ArrowInvalid:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield from reader.get_batch(i).to_pylist()
            return
        for batch in reader:
            yield from batch.to_pylist()


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
    if not paths:
        raise ConfigError("no input given")
    if kind == "auto":
        kind = detect(paths)
    reader = SOURCES.get(kind)
    for p in paths:
        if not any(c in p for c in "*?[") and not os.path.exists(p):
            raise ConfigError(f"{p}: not found")
    return reader(paths, options)


def item_bytes(item: Item) -> bytes:
    """The item's bytes (reading its file); OSError for an unreadable file."""
    if isinstance(item.data, bytes):
        return item.data
    with open(item.data, "rb") as f:
        return f.read()


__all__ = ["SOURCES", "Item", "detect", "item_bytes", "read_source"]
