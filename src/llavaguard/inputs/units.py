"""Work units: an input split into pieces that workers read by themselves.

On a cluster the driver must not read every item (tar members included) and ship it to the
workers; it hands out units instead (a tar shard, a Parquet row group, a byte range of a path
list, a chunk of a folder listing, one data file of a datasets folder) and each worker reads
its unit's items with ``read_unit``. Reading every unit in order gives exactly what
``read_source`` gives (ids, keys, data, errors, order), because both call the same readers of
sources.py.

Units are streamed too: a path list is read once and a folder walked once, a unit yielded
every ``unit_size`` items, so neither the items nor a whole listing is held. A unit's name is
where its rows go, so names are stable across runs (same inputs, same unit size) and unique:
two inputs that would give one name are refused rather than one's rows overwriting the other's.

How each kind splits:

- webdataset: one unit per tar, named after the tar (its items are not counted: that would
  read it);
- list: ``unit_size`` paths per unit, a byte range of the list that starts at a line;
- folder: ``unit_size`` files per unit, named relative to the folder argument; files given
  one by one are chunked the same way (``path`` empty, ``part`` the files as given);
- table: one unit per Parquet row group (but empty ones); a CSV, JSONL or JSON table is one
  unit per file, as those cannot be entered in the middle without reading all before;
- hf: one unit per Parquet row group or Arrow data file (but empty ones), starting at its
  row number.

``unit_size`` splits lists and folders only; tables and datasets split where their files do.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llavaguard.errors import ConfigError
from llavaguard.inputs.images import expand_paths
from llavaguard.inputs.sources import (
    Item,
    checked_kind,
    folder,
    folder_items,
    hf_files,
    hf_items,
    hf_parts,
    hf_rows,
    list_items,
    list_lines,
    table_items,
    tar_items,
    tar_shards,
)
from llavaguard.inputs.tables import is_parquet, iter_rows, row_group_sizes

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_STEM = 100  # a name, with its kind, index and a file suffix, stays far below 255 bytes


@dataclass(frozen=True)
class Unit:
    """A piece of the input that one worker reads by itself: a tar shard, a Parquet row group,
    a byte range of a path list, a chunk of a folder listing, one table/arrow file."""

    name: str  # stable across runs, filesystem-safe ([A-Za-z0-9._-]), unique within a run
    kind: str  # the source kind: webdataset, table, list, folder, hf
    path: str  # the file (tar, parquet, csv, list, arrow) or the folder argument
    # what of ``path``: () for all of it; list: (byte start, byte end); folder: the file names
    # relative to ``path`` (or the files as given, ``path`` ""); table: (row group, first row
    # number) for Parquet; hf: (row group or None, first row number, the argument's name)
    part: tuple = ()
    size: int | None = None  # how many items, where known without reading the data


Planner = Callable[[list[str], int, dict[str, Any]], Iterator[Unit]]
UnitReader = Callable[[Unit, dict[str, Any]], Iterator[Item]]


def units(
    paths: list[str], kind: str = "auto", unit_size: int = 1000, **options: Any
) -> Iterator[Unit]:
    """The work units of the input, streamed, in ``read_source``'s order. ``options`` are
    ``read_source``'s (path_column, id_column, image_column). Bad input (nothing given, a
    missing path, a unit size below 1) is a ConfigError here, before the first unit; two
    inputs that give one unit name are one when the second is reached."""
    kind = _checked(paths, kind, unit_size)
    return _unique(_PLANNERS[kind](paths, unit_size, options))


def read_unit(unit: Unit, **options: Any) -> Iterator[Item]:
    """The items of one unit, exactly as ``read_source`` gives them at that place (a corrupt
    tar: the items before the break, then its ``<shard>`` error item)."""
    if unit.kind not in _READERS:
        raise ConfigError(f"unknown work unit kind {unit.kind!r} (valid: {', '.join(_READERS)})")
    if unit.path and not any(c in unit.path for c in "*?[") and not os.path.exists(unit.path):
        raise ConfigError(f"{unit.path}: not found")
    return _READERS[unit.kind](unit, options)


def count_units(
    paths: list[str], kind: str = "auto", unit_size: int = 1000, **options: Any
) -> int | None:
    """How many units ``units`` gives, where metadata alone says (tar files, Parquet footers,
    Arrow batch headers, one per CSV/JSONL table); None for lists and folders, which would
    have to be read or walked whole."""
    kind = _checked(paths, kind, unit_size)
    if kind == "webdataset":
        return len(tar_shards(paths))
    if kind == "table":
        return sum(sum(map(bool, row_group_sizes(p))) if is_parquet(p) else 1 for p in paths)
    if kind == "hf":
        return sum(bool(n) for arg in paths for f in hf_files(arg) for _, n in hf_parts(f))
    return None


def _checked(paths: list[str], kind: str, unit_size: int) -> str:
    if isinstance(unit_size, bool) or not isinstance(unit_size, int) or unit_size < 1:
        raise ConfigError(f"unit size must be a whole number of 1 or more, not {unit_size}")
    kind = checked_kind(paths, kind)
    if kind not in _PLANNERS:
        raise ConfigError(f"{kind} inputs cannot be split into work units")
    return kind


def _unique(found: Iterable[Unit]) -> Iterator[Unit]:
    """``found``, refusing a second unit of one name: its rows would replace the first's."""
    seen: dict[str, str] = {}
    for unit in found:
        if unit.name in seen:
            raise ConfigError(
                f"{seen[unit.name] or 'files given one by one'} and "
                f"{unit.path or 'files given one by one'} both make the work unit {unit.name!r}, "
                "so one's rows would overwrite the other's: rename one or run them apart"
            )
        seen[unit.name] = unit.path
        yield unit


def safe_name(text: str) -> str:
    """``text`` as a filesystem-safe name part: as it is where it is one already; else its
    other characters (and a leading dot, which hides a file) made ``_``, cut to a length any
    filesystem takes, and a short hash of the original added, so that ``a b`` and ``a_b``
    stay two names."""
    safe = _UNSAFE.sub("_", text)
    safe = "_" + safe[1:] if safe.startswith(".") else safe
    if safe == text and 0 < len(text) <= _MAX_STEM:
        return text
    digest = hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return f"{safe[:_MAX_STEM] or '_'}-{digest}"


def _stem(arg: str) -> str:
    """The name part of an argument: its last part, also for ``.`` or ``dir/``."""
    return safe_name(os.path.basename(os.path.abspath(arg)))


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    it = iter(items)
    return iter(lambda: list(itertools.islice(it, size)), [])


def _tar_units(paths: list[str], unit_size: int, options: dict[str, Any]) -> Iterator[Unit]:
    for shard in tar_shards(paths):  # names, not items: a sorted list of them is small
        yield Unit(safe_name(Path(shard).stem), "webdataset", shard)


def _list_units(paths: list[str], unit_size: int, options: dict[str, Any]) -> Iterator[Unit]:
    """One pass over each list: a unit every ``unit_size`` paths, from the byte after the
    last unit's last path to the end of its own last path's line."""
    for arg in paths:
        stem, index, start, count, end = _stem(arg), 0, 0, 0, 0
        for end, line in list_lines(arg):
            count += line is not None
            if count == unit_size:
                yield Unit(f"list-{stem}-{index:06d}", "list", arg, (start, end), count)
                index, start, count = index + 1, end, 0
        if count:  # the rest; blank and # lines after the last path need no unit
            yield Unit(f"list-{stem}-{index:06d}", "list", arg, (start, end), count)


def _folder_units(paths: list[str], unit_size: int, options: dict[str, Any]) -> Iterator[Unit]:
    """Folders walked in ``expand_paths``' order, a unit every ``unit_size`` files; runs of
    files given one by one chunked alike, so units keep the order of the arguments."""
    loose = 0  # the index of units of files given one by one, across the whole run
    for is_folder, group in itertools.groupby(paths, os.path.isdir):  # expand_paths' test
        if not is_folder:
            for chunk in _chunks(group, unit_size):
                yield Unit(f"folder-files-{loose:06d}", "folder", "", tuple(chunk), len(chunk))
                loose += 1
            continue
        for arg in group:
            stem, base = _stem(arg), Path(arg)
            names = (str(p.relative_to(base)) for p in expand_paths([arg]))
            for i, chunk in enumerate(_chunks(names, unit_size)):
                yield Unit(f"folder-{stem}-{i:06d}", "folder", arg, tuple(chunk), len(chunk))


def _table_units(paths: list[str], unit_size: int, options: dict[str, Any]) -> Iterator[Unit]:
    """A unit per Parquet row group (from the footer; its first row number carried, as the
    ``file:n`` id of a row with no path needs it); a unit per file of any other format."""
    for arg in paths:
        stem = _stem(arg)
        if not is_parquet(arg):
            yield Unit(f"table-{stem}-000000", "table", arg)
            continue
        first = 1
        for group, rows in enumerate(row_group_sizes(arg)):
            if rows:  # an empty row group (an empty table has one) is no work
                yield Unit(f"table-{stem}-{group:06d}", "table", arg, (group, first), rows)
            first += rows


def _hf_units(paths: list[str], unit_size: int, options: dict[str, Any]) -> Iterator[Unit]:
    """A unit per Parquet row group or Arrow file of each argument, with the row number it
    starts at (row numbers run on across an argument's files), counted from metadata."""
    for arg in paths:
        stem, first, index = _stem(arg), 1, 0
        for path in hf_files(arg):
            for group, rows in filter(lambda part: part[1], hf_parts(path)):  # rows, or no work
                part = (group, first, Path(arg).name)
                yield Unit(f"hf-{stem}-{index:06d}", "hf", path, part, rows)
                first, index = first + rows, index + 1


def _read_folder(unit: Unit, options: dict[str, Any]) -> Iterator[Item]:
    if not unit.path:  # files given one by one: the source reads them as it reads arguments
        return folder(list(unit.part), options)
    return folder_items(unit.path, (Path(unit.path) / name for name in unit.part))


def _read_table(unit: Unit, options: dict[str, Any]) -> Iterator[Item]:
    if not unit.part:
        return table_items(unit.path, iter_rows(unit.path), 1, options)
    group, first = unit.part
    return table_items(unit.path, iter_rows(unit.path, row_group=group), first, options)


def _read_hf(unit: Unit, options: dict[str, Any]) -> Iterator[Item]:
    group, first, arg_name = unit.part
    rows = hf_rows(unit.path, group)
    return hf_items(arg_name, unit.path, rows, itertools.count(first), options)


_PLANNERS: dict[str, Planner] = {
    "webdataset": _tar_units,
    "list": _list_units,
    "folder": _folder_units,
    "table": _table_units,
    "hf": _hf_units,
}
_READERS: dict[str, UnitReader] = {
    "webdataset": lambda unit, options: tar_items(unit.path),
    "list": lambda unit, options: list_items(unit.path, *unit.part),
    "folder": _read_folder,
    "table": _read_table,
    "hf": _read_hf,
}

__all__ = ["Unit", "count_units", "read_unit", "safe_name", "units"]
