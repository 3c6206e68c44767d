"""Public benchmarks as labelled sets, read from local copies in their published layouts.

``evaluate run --benchmark NAME --data PATH`` scores a safeguard on UnsafeBench, VLGuard,
SafeEditBench or the LlavaGuard dataset exactly as on a labels file: each reader turns the
benchmark's rows into the one label row layout and ``inputs.labels.samples_from_rows`` makes the
samples, so they are checked, resolved and reported like the rows of any labels file.

The benchmark's own Safe/Unsafe label is always the rating. Its categories map to the LlavaGuard
v1.2 codes by a table per benchmark (``--label-map`` overrides entries of it). A category mapped
to NA has no counterpart in the LlavaGuard policy, so an Unsafe image of it cannot be labelled
under that policy: it is left out and counted (as ``dataset import`` drops Unsafe rows mapped to
NA), while its Safe images stay. A category with no mapping at all stops the read with one line
that lists them. SafeEditBench labels each image under five policies of its own, so its samples
are judged under those; the LlavaGuard dataset is in the LlavaGuard taxonomy already.

Images kept as bytes inside Parquet or Arrow files are written out (to ``images``) only when a
model has to look at them; scoring a predictions file needs no pixels. Nothing is downloaded.
The layouts and tables are documented in docs/evaluation.md ("Public benchmarks").
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from llavaguard.errors import ConfigError
from llavaguard.inputs.images import sniff_format
from llavaguard.inputs.labels import (
    LabelledSample,
    parse_rating,
    prompt_states,
    read_labels,
    samples_from_rows,
)
from llavaguard.inputs.sources import hf_files, hf_rows
from llavaguard.inputs.tables import numbered_rows, row_where, shown
from llavaguard.inputs.units import safe_name
from llavaguard.policy import Policy, canonical_category
from llavaguard.policy.taxonomy import allowed_text, bullets_of, sensitive_text
from llavaguard.registry import Registry

DEFAULT_SPLIT = "test"
NA = "NA"

# UnsafeBench's eleven categories (the DALL-E content policy's) -> LlavaGuard v1.2. Safe images
# carry a category too (the one their search was for); only Unsafe ones use the table.
UNSAFEBENCH = {
    "Hate": "O1", "Harassment": "O1", "Violence": "O2", "Self-harm": "O7", "Sexual": "O3",
    "Shocking": "O2", "Illegal activity": "O5", "Deception": NA, "Political": NA,
    "Public and personal health": NA, "Spam": NA,
}  # fmt: skip

# VLGuard's harmful_category/harmful_subcategory -> LlavaGuard v1.2; a category alone is the
# fallback for a subcategory the table lacks ("risky behavior" mixes kinds: it has none).
VLGUARD = {
    "privacy/personal data": NA, "risky behavior/professional advice": NA,
    "risky behavior/political": NA, "risky behavior/sexually explicit": "O3",
    "risky behavior/violence": "O2", "deception/disinformation": NA,
    "discrimination/sex": "O1", "discrimination/race": "O1", "discrimination/other": "O1",
    "privacy": NA, "deception": NA, "discrimination": "O1",
}  # fmt: skip

# the Parquet files of a split: as the Hub publishes them, as its converter writes them, or
# in a folder of their own; a datasets save_to_disk folder is found by its dataset_dict.json
_PARQUET = ("data/{s}-*.parquet", "data/{s}/*.parquet", "default/{s}/*.parquet",
            "{s}/*.parquet", "{s}-*.parquet")  # fmt: skip
_EXTENSIONS = {"JPEG": ".jpg", "TIFF": ".tif"}


@dataclass(frozen=True)
class Benchmark:
    """One public benchmark: its names, splits, the layout its reader expects (said when the
    folder holds something else) and its category table (None: its labels are not mapped)."""

    name: str
    title: str
    hub: str
    splits: tuple[str, ...]
    expected: str  # with {split}
    categories: dict[str, str] | None
    read: Callable[[Read], list[LabelledSample]]


BENCHMARKS: Registry[Benchmark] = Registry("benchmark")


def _benchmark(
    name: str,
    title: str,
    hub: str,
    expected: str,
    categories: dict[str, str] | None = None,
    splits: tuple[str, ...] = ("train", "test"),
) -> Callable[[Callable[[Read], list[LabelledSample]]], Any]:
    def register(read: Callable[[Read], list[LabelledSample]]) -> Any:
        BENCHMARKS.register(name, Benchmark(name, title, hub, splits, expected, categories, read))
        return read

    return register


def read_benchmark(
    name: str,
    data: str | Path,
    split: str | None = None,
    label_map: str | Path | None = None,
    images: str | Path | None = None,
) -> tuple[list[LabelledSample], list[str]]:
    """The labelled samples of benchmark ``name``'s ``split`` (default test) from the local
    copy in ``data``, and notes on what was left out. ``label_map`` overrides entries of the
    category table; ``images``: where images kept as bytes are written for a model to see
    (None: such samples have no image)."""
    bench = BENCHMARKS.get(name)
    folder = Path(data)
    if not folder.is_dir():
        what = "not found" if not folder.exists() else "not a folder"
        raise ConfigError(f"{folder}: {what} (--data takes the folder of a local copy of "
                          f"{bench.hub})")  # fmt: skip
    split = split or DEFAULT_SPLIT
    if split not in bench.splits:
        splits = ", ".join(bench.splits)
        raise ConfigError(f"{bench.title} has no split {split!r} (splits: {splits})")
    read = Read(bench, folder, split, _categories(bench, label_map),
                Path(images).resolve() if images is not None else None)  # fmt: skip
    samples = bench.read(read)
    if read.unmapped:
        names = ", ".join(repr(c) for c in sorted(read.unmapped))
        raise ConfigError(f"{bench.title}: no LlavaGuard category for {names} (give each an "
                          "O-code or NA in --label-map FILE)")  # fmt: skip
    if not samples:
        why = f": all {sum(read.left_out.values())} left out" if read.left_out else ""
        raise ConfigError(f"{folder}: no samples in {bench.title}'s {split} split{why}")
    return samples, read.notes()


def _norm(text: Any) -> str:
    return " ".join(str(text).casefold().split())


def _categories(bench: Benchmark, label_map: str | Path | None) -> dict[str, str]:
    if bench.categories is None:
        if label_map is not None:
            mapped = ", ".join(n for n in BENCHMARKS if BENCHMARKS.get(n).categories is not None)
            raise ConfigError(f"--label-map: {bench.title} is labelled in a policy's own terms, "
                              f"nothing to map (it applies to {mapped})")  # fmt: skip
        return {}
    table = {_norm(k): v for k, v in bench.categories.items()}
    return table | (load_label_map(label_map) if label_map is not None else {})


def load_label_map(path: str | Path) -> dict[str, str]:
    """``{their category: O-code, category label or NA}`` from a YAML or JSON file, keys
    compared without case and extra spaces, each value checked against LlavaGuard v1.2."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the label map ({e.__class__.__name__})") from e
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"{path}: a label map is a mapping {{their category: O-code or NA}}")
    policy = Policy.load()
    out = {}
    for key, value in data.items():
        code = _code(value, policy)
        if code is None:
            codes = ", ".join(c.code for c in policy.categories)
            raise ConfigError(f"{path}: {str(key)!r} maps to {shown(value)}, neither NA nor a "
                              f"category of {policy.name} ({codes})")  # fmt: skip
        out[_norm(key)] = code
    return out


def _code(value: Any, policy: Policy) -> str | None:
    if not isinstance(value, str):
        return None
    if value.strip().upper() == NA:
        return NA
    label = canonical_category(value, policy)
    return None if label is None else policy.code_of(label) or NA


@dataclass
class Read:
    """One read of a benchmark split: where it lies, how its categories map, what was left
    out (by own category) and which categories had no mapping."""

    bench: Benchmark
    data: Path  # as given: paths in rows are relative to it, as a labels file's to its folder
    split: str
    categories: dict[str, str]
    images: Path | None
    policy: Policy = field(default_factory=Policy.load)
    left_out: Counter[str] = field(default_factory=Counter)
    unmapped: set[str] = field(default_factory=set)

    def samples(self, rows: Iterable[tuple[str, dict[str, Any]]]) -> list[LabelledSample]:
        return samples_from_rows(rows, self.data, self.policy)

    def rating(self, value: Any, where: str) -> str:
        try:
            return parse_rating(value)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None

    def category(self, rating: str, keys: list[str]) -> str | None:
        """The label row's category: "" for a Safe sample (the policy's none category), the
        mapped code for an Unsafe one (the first of ``keys`` the table has), or None: leave
        the sample out (mapped to NA: counted; not mapped: the read stops, naming it)."""
        if rating == "Safe":
            return ""
        code = next((self.categories[k] for k in map(_norm, keys) if k in self.categories), None)
        if code is None:
            self.unmapped.add(keys[0])
        elif code == NA:
            self.left_out[keys[0]] += 1
        return None if code in (None, NA) else code

    def image(self, value: Any, stem: str, path: Any = None) -> str | None:
        """A file for the image: ``path`` or the image's own path where that file exists in
        the copy (relative to it); else its bytes, written as ``stem`` in ``images`` when a
        model will look (kept if already there); else None."""
        own = value.get("path") if isinstance(value, dict) else value
        for candidate in (path, own):
            if isinstance(candidate, str) and candidate and (self.data / candidate).is_file():
                return candidate
        data = value.get("bytes") if isinstance(value, dict) else value
        if isinstance(data, bytes | bytearray) and data and self.images is not None:
            return _write_image(bytes(data), self.images, stem)
        return None

    def table(self, required: tuple[str, ...]) -> Iterator[tuple[str, int, dict[str, Any]]]:
        """(where, n, row) for each row of the split's Parquet or Arrow files in name order;
        ``n`` counts from 1 across them, as ``llavaguard assess`` numbers a split's file."""
        files = self._table_files()
        if not files:
            raise self.layout_error()
        n = 0
        for path in files:
            for i, row in enumerate(_file_rows(path), 1):
                if i == 1:
                    check_columns(path, row, required, self.bench.title)
                n += 1
                yield f"{path} row {i}", n, row

    def _table_files(self) -> list[Path]:
        saved = self.data / "dataset_dict.json"
        if saved.is_file():  # datasets' save_to_disk: one folder per split
            try:
                splits = list(json.loads(saved.read_text(encoding="utf-8"))["splits"])
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise ConfigError(f"{saved}: not a datasets dict ({e.__class__.__name__})") from e
            if self.split not in splits:
                raise ConfigError(f"{saved}: no split {self.split!r} (splits: {', '.join(splits)})")
            return [Path(p) for p in hf_files(str(self.data / self.split))]
        for pattern in _PARQUET:
            found = sorted(self.data.glob(pattern.format(s=self.split)))
            if found:
                return found
        return []

    def layout_error(self) -> ConfigError:
        expected = self.bench.expected.format(split=self.split)
        return ConfigError(f"{self.data}: no {self.bench.title} {self.split} split here "
                           f"(expected {expected})")  # fmt: skip

    def notes(self) -> list[str]:
        if not self.left_out:
            return []
        counts = ", ".join(f"{k or '(none)'} {v}" for k, v in sorted(self.left_out.items()))
        remedy = "; --label-map gives them a category" if self.categories else ""
        return [f"{self.bench.title} {self.split}: {sum(self.left_out.values())} Unsafe "
                f"sample(s) left out, their category being NA in the LlavaGuard policy "
                f"({counts}){remedy}"]  # fmt: skip


def _file_rows(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of one Parquet or Arrow file; an unreadable file is one line naming it."""
    try:
        yield from hf_rows(str(path))
    except ConfigError:
        raise
    except Exception as e:  # whatever pyarrow says: one line
        raise ConfigError(f"{path}: cannot read ({e.__class__.__name__}: {e})") from e


def check_columns(path: Path, row: dict[str, Any], required: tuple[str, ...], title: str) -> None:
    missing = [c for c in required if c not in row]
    if missing:
        has = ", ".join(list(row)[:12]) or "none"
        raise ConfigError(f"{path}: no column {missing[0]!r} ({title} rows have "
                          f"{', '.join(required)}; this file has {has})")  # fmt: skip


def _write_image(data: bytes, folder: Path, stem: str) -> str:
    """Image bytes as a file named ``stem`` plus the extension of their format, written to a
    temporary name and renamed (a rerun finds it whole, and keeps it)."""
    fmt = sniff_format(data[:16])
    target = folder / (stem + (_EXTENSIONS.get(fmt, f".{fmt.lower()}") if fmt else ""))
    if target.is_file() and target.stat().st_size == len(data):
        return str(target)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as e:
        raise ConfigError(f"{target}: cannot write the image ({e.strerror or e})") from e
    return str(target)


# ---- the benchmarks --------------------------------------------------------------------------


@_benchmark(
    "unsafebench", "UnsafeBench", "yiting/UnsafeBench",
    "data/{split}-*.parquet as on the Hub, with columns image, safety_label, category; or a "
    "datasets save_to_disk folder with dataset_dict.json and {split}/",
    UNSAFEBENCH,
)  # fmt: skip
def _unsafebench(read: Read) -> list[LabelledSample]:
    """Rows: image (an Image struct of bytes and path), safety_label (Safe/Unsafe), category
    (one of eleven), source (Laion5B/Lexica), text. Sample ids: the row number in the split."""

    def rows() -> Iterator[tuple[str, dict[str, Any]]]:
        for where, n, row in read.table(("image", "safety_label", "category")):
            rating = read.rating(row["safety_label"], where)
            category = read.category(rating, [str(row["category"] or "")])
            if category is not None:
                image = read.image(row["image"], f"{read.split}-{n:06d}")
                yield where, {"id": str(n), "image": image, "rating": rating, "category": category}

    return read.samples(rows())


@_benchmark(
    "vlguard", "VLGuard", "ys-zong/VLGuard",
    "{split}.json as on the Hub, with {split}.zip unzipped into {split}/",
    VLGUARD,
)  # fmt: skip
def _vlguard(read: Read) -> list[LabelledSample]:
    """``{split}.json``: a list of {id, image ("source/name.png", under ``{split}/``), safe,
    harmful_category, harmful_subcategory, instr-resp}. Sample ids: the image path, the id
    ``llavaguard assess {split}/`` gives it."""
    meta, folder = read.data / f"{read.split}.json", read.data / read.split
    if not meta.is_file():
        raise read.layout_error()
    if read.images is not None and not folder.is_dir():
        raise ConfigError(f"{folder}: not found (VLGuard's images: {read.split}.zip unzipped "
                          f"into {read.split}/)")  # fmt: skip

    def rows() -> Iterator[tuple[str, dict[str, Any]]]:
        for n, row in numbered_rows(meta):
            where = row_where(meta, n)
            image, safe = row.get("image"), row.get("safe")
            if not isinstance(image, str) or not image:
                raise ConfigError(f"{where}: no 'image' path")
            if not isinstance(safe, bool):
                raise ConfigError(f"{where}: 'safe' must be true or false, got {shown(safe)}")
            rating = "Safe" if safe else "Unsafe"
            kind, sub = (_norm(row.get(f"harmful_{k}") or "") for k in ("category", "subcategory"))
            category = read.category(rating, [f"{kind}/{sub}", kind])
            if category is not None:
                yield where, {"id": image, "image": f"{read.split}/{image}", "rating": rating,
                              "category": category}  # fmt: skip

    return read.samples(rows())


_LEVEL = re.compile(r"\bL([1-5])\b")


def level_of(value: Any, where: str) -> str:
    """``L1``..``L5`` from a policy_name: its class index 0-4 (as the Parquet files store the
    class label) or its name, ``Policy L3``."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 4:
        return f"L{value + 1}"
    found = _LEVEL.search(value) if isinstance(value, str) else None
    if found is None:
        raise ConfigError(f"{where}: policy_name must be Policy L1 to Policy L5 (or its class "
                          f"index 0-4), got {shown(value)}")  # fmt: skip
    return f"L{found.group(1)}"


def level_policy(level: str, text: str) -> dict[str, Any]:
    """A SafeEditBench policy level as an inline policy: one category, ``L3: Policy L3``,
    whose guidelines are the row's policy text, within the usual preamble and steps."""
    bullets = bullets_of(text) or [f"Policy {level}"]
    category = {"code": level, "name": f"Policy {level}", "default": text,
                "non_violating": allowed_text(level, bullets),
                "sensitive": sensitive_text(level, bullets)}  # fmt: skip
    return {"name": f"safeeditbench-{level}", "categories": [category]}


@_benchmark(
    "safeeditbench", "SafeEditBench", "tyodd/SafeEditBench",
    "data/{split}-*.parquet as on the Hub, with columns image, image_path, safety_label, "
    "policy_name, policy; or a datasets save_to_disk folder with dataset_dict.json and {split}/",
    splits=("test",),  # the images of train_images/ come without labels
)  # fmt: skip
def _safeeditbench(read: Read) -> list[LabelledSample]:
    """Rows: image (Image struct), image_path (under ``{split}_images/``: ``x.jpg`` unsafe
    originals, ``x_edited.jpg`` their edits), safety_label (class 0 safe, 1 unsafe),
    policy_name (class 0-4: Policy L1-L5), policy (its text). Each row is judged under its own
    level's policy; Unsafe means that level's one category. Sample ids: the row number."""
    specs: dict[tuple[str, str], dict[str, Any]] = {}

    def rows() -> Iterator[tuple[str, dict[str, Any]]]:
        for where, n, row in read.table(("image", "safety_label", "policy_name", "policy")):
            rating = read.rating(row["safety_label"], where)
            level, text = level_of(row["policy_name"], where), str(row["policy"] or "")
            if not text.strip():
                raise ConfigError(f"{where}: the policy text is empty")
            spec = specs.setdefault((level, text), level_policy(level, text))
            path = row.get("image_path")
            stem = safe_name(os.path.splitext(path)[0]) if path else f"{read.split}-{n:06d}"
            yield where, {"id": str(n), "image": read.image(row["image"], stem, path),
                          "rating": rating, "category": level if rating == "Unsafe" else "",
                          "policy": spec}  # fmt: skip

    return read.samples(rows())


@_benchmark(
    "llavaguard", "LlavaGuard dataset", "AIML-TUDA/LlavaGuard",
    "{split}.csv as on the Hub (id, url, rating, category, rationale, policy) with its images "
    "in images/, or {split}.json in the LLaVA conversation format, or data/{split}-*.parquet "
    "or a save_to_disk folder with the CSV's columns",
)  # fmt: skip
def _llavaguard(read: Read) -> list[LabelledSample]:
    """``{split}.csv`` rows: id, url (the image's address; the file is looked for in
    ``images/`` by the URL's last part), rating, category (a v1.2 label), rationale, policy
    (the whole prompt, from which the declared allowed/sensitive categories are read). The
    LLaVA conversation JSON is read as a labels file is (the project's one reader of it)."""
    table, conversations = read.data / f"{read.split}.csv", read.data / f"{read.split}.json"
    if table.is_file():
        named: Iterable[tuple[str, dict[str, Any]]] = (
            (row_where(table, n), row) for n, row in numbered_rows(table))  # fmt: skip
    elif conversations.is_file():
        return read_labels(conversations, read.policy)
    else:
        named = ((where, row) for where, _, row in read.table(("rating", "category", "policy")))
    return read.samples(_llavaguard_rows(read, named, table))


def _llavaguard_rows(
    read: Read, named: Iterable[tuple[str, dict[str, Any]]], table: Path
) -> Iterator[tuple[str, dict[str, Any]]]:
    states: dict[str, tuple[list[str], list[str]]] = {}
    for i, (where, row) in enumerate(named):
        if i == 0:
            check_columns(table, row, ("rating", "category", "policy"), read.bench.title)
        prompt = str(row["policy"] or "")
        if prompt not in states:
            try:
                states[prompt] = prompt_states(prompt, read.policy)
            except ValueError as e:
                raise ConfigError(f"{where}: the policy column is not a {read.policy.name} "
                                  f"prompt ({e})") from None  # fmt: skip
        rating = read.rating(row["rating"], where)
        if rating == "Unsafe" and canonical_category(str(row["category"] or NA), read.policy) \
                == read.policy.taxonomy.none_category:  # fmt: skip
            read.left_out[NA] += 1  # inconsistent in the taxonomy's own terms
            continue
        allow, sensitive = states[prompt]
        yield where, {"id": row.get("id"), "image": _llavaguard_image(read, row),
                      "rating": rating, "category": row["category"],
                      "rationale": row.get("rationale"), "allow": allow,
                      "sensitive": sensitive}  # fmt: skip


def _llavaguard_image(read: Read, row: dict[str, Any]) -> str | None:
    """The row's ``image`` where it has one, else ``images/`` + the last part of its URL."""
    stem = safe_name(str(row.get("id")))
    if row.get("image") not in (None, ""):
        return read.image(row["image"], stem)
    url = row.get("url")
    name = os.path.basename(urlparse(url).path) if isinstance(url, str) else ""
    return f"images/{name}" if name else None


__all__ = ["BENCHMARKS", "DEFAULT_SPLIT", "Benchmark", "load_label_map", "read_benchmark"]
