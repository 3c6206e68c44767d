"""Curated subsets of an annotated dataset: a folder of images (links or copies), a list of
paths, or new WebDataset tar shards with each image's row beside it as JSON."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from llavaguard.annotate.store import ResultStore
from llavaguard.errors import ConfigError


def read_image_bytes(key: str) -> bytes:
    """An image's bytes from its row key: a file path, or ``shard.tar:member``."""
    if os.path.isfile(key):
        with open(key, "rb") as f:
            return f.read()
    shard, sep, member = key.rpartition(":")
    if sep and shard.endswith(".tar") and os.path.isfile(shard):
        with tarfile.open(shard) as tar:
            f = tar.extractfile(member)
            if f is not None:
                return f.read()
    raise FileNotFoundError(key)


def select(
    root: Path,
    keep: Literal["safe", "unsafe", "all"] = "safe",
    categories: Sequence[str] = (),
    min_score: float | None = None,
    max_score: float | None = None,
) -> list[dict[str, Any]]:
    """Rows that pass: rating (error rows never pass), categories (codes or labels), score."""
    if ResultStore(root).describe() is None:
        raise ConfigError(f"{root}: not an annotation results folder (no manifest, no shards)")
    rows = ResultStore(root).rows().to_pylist()
    wanted = {c.strip().lower() for c in categories if c.strip()}
    out = []
    for r in rows:
        if r["rating"] is None:
            continue
        if keep != "all" and r["rating"].lower() != keep:
            continue
        if wanted:
            cat = (r["category"] or "").lower()
            if cat not in wanted and cat.split(":")[0].strip() not in wanted:
                continue
        if (min_score is not None or max_score is not None) and r["score"] is None:
            continue
        if min_score is not None and r["score"] < min_score:
            continue
        if max_score is not None and r["score"] > max_score:
            continue
        out.append(r)
    return out


def export(
    root: Path,
    to: Path,
    *,
    fmt: Literal["folder", "list", "webdataset"] = "folder",
    link: bool = False,
    shard_size: int = 1000,
    **criteria: Any,
) -> int:
    """Write the selected rows' images to ``to``; returns how many were written."""
    rows = select(root, **criteria)
    if fmt == "list":
        to.parent.mkdir(parents=True, exist_ok=True)
        to.write_text("".join(r["key"] + "\n" for r in rows), encoding="utf-8")
        return len(rows)
    to.mkdir(parents=True, exist_ok=True)
    if fmt == "folder":
        for r in rows:
            target = to / _safe_name(r["id"], r["key"])
            target.parent.mkdir(parents=True, exist_ok=True)
            if link and os.path.isfile(r["key"]):
                target.unlink(missing_ok=True)
                target.symlink_to(os.path.abspath(r["key"]))
            elif os.path.isfile(r["key"]):
                shutil.copyfile(r["key"], target)
            else:
                target.write_bytes(read_image_bytes(r["key"]))
        return len(rows)
    if fmt == "webdataset":
        for start in range(0, len(rows), shard_size):
            path = to / f"{start // shard_size:06d}.tar"
            tmp = path.with_name(path.name + ".tmp")
            with tarfile.open(tmp, "w") as tar:
                for i, r in enumerate(rows[start : start + shard_size], start):
                    key = f"{i:09d}"
                    ext = os.path.splitext(r["key"])[1].lower() or ".jpg"
                    _add(tar, key + ext, read_image_bytes(r["key"]))
                    meta = {k: (v.isoformat() if hasattr(v, "isoformat") else v)
                            for k, v in r.items()}  # fmt: skip
                    if isinstance(meta.get("category_scores"), list):
                        meta["category_scores"] = dict(meta["category_scores"])
                    _add(tar, key + ".json", json.dumps(meta).encode())
            os.replace(tmp, path)
        return len(rows)
    raise ConfigError(f"unknown export format {fmt!r} (valid: folder, list, webdataset)")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _safe_name(item_id: str, key: str) -> str:
    """A relative path inside the export folder (no absolute paths, no '..'), ending in the
    image's own extension."""
    parts = [p for p in Path(item_id.replace(":", "_")).parts if p not in ("", "/", "..", ".")]
    name = "/".join(parts) or "image"
    ext = os.path.splitext(key)[1]
    if ext and not name.lower().endswith(ext.lower()):
        name += ext
    return name
