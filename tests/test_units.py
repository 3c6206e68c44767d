"""Work units (inputs/units.py): every unit read in order gives exactly what read_source gives,
for every source kind and unit size; names are stable, unique and safe; sizes and counts are
right; bad input is one line. Fast: small files built here, no model, no Ray."""

from __future__ import annotations

import io
import os
import re
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llavaguard.errors import ConfigError
from llavaguard.inputs import sources
from llavaguard.inputs.images import IMAGE_EXTENSIONS, expand_paths
from llavaguard.inputs.sources import read_source
from llavaguard.inputs.units import Unit, count_units, read_unit, safe_name, units

SIZES = (1, 2, 3, 7, 1000)  # 1, sizes that do not divide the counts, one larger than all
SAFE = re.compile(r"[A-Za-z0-9._-]+")


def check_units(paths: list[str], kind: str = "auto", **options) -> list:
    """read_source's items, after checking that the units of every size give the same items in
    the same order, with safe, unique, repeatable names, right sizes and the right count."""
    want = list(read_source(paths, kind, **options))
    for size in SIZES:
        made = list(units(paths, kind, size, **options))
        got = [[*read_unit(u, **options)] for u in made]
        assert [it for items in got for it in items] == want, size
        names = [u.name for u in made]
        assert len(set(names)) == len(names) and all(SAFE.fullmatch(n) for n in names)
        assert names == [u.name for u in units(paths, kind, size, **options)]
        assert all(u.size in (None, len(items)) for u, items in zip(made, got, strict=True))
        assert count_units(paths, kind, size, **options) in (None, len(made))
    return want


def shard(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if name.endswith("/"):
                info.type = tarfile.DIRTYPE
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


# ---- webdataset ------------------------------------------------------------------------------


def make_shards(folder: Path) -> list[Path]:
    return [
        shard(
            folder / "00000.tar",
            {"000000000.jpg": b"a", "000000000.json": b"{}", "000000001.png": b"b", "sub/": b""},
        ),
        shard(folder / "00001.tar", {f"{k:09d}.webp": bytes([k]) for k in range(5)}),
        shard(folder / "00002.tar", {"x.txt": b"no image"}),
    ]


def test_tar_units_give_the_source_items(tmp_path):
    tars = make_shards(tmp_path / "wds")
    for paths in ([str(t) for t in tars], [str(tmp_path / "wds")], [str(tmp_path / "wds/*.tar")]):
        items = check_units(paths)
        assert len(items) == 7 and items[0].id == "00000/000000000"
        made = list(units(paths))
        assert [(u.name, u.kind, u.size) for u in made] == [
            ("00000", "webdataset", None), ("00001", "webdataset", None),
            ("00002", "webdataset", None)]  # fmt: skip
        assert count_units(paths) == 3


def test_a_corrupt_tar_unit_gives_the_items_before_and_its_error_item(tmp_path):
    good = shard(tmp_path / "a.tar", {f"{k}.jpg": bytes(3000) for k in range(3)})
    cut = tmp_path / "cut.tar"
    cut.write_bytes(good.read_bytes()[:5000])  # the second member's data ends early
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 40)
    paths = [str(good), str(cut), str(tmp_path / "junk.tar")]
    items = check_units(paths, "webdataset")
    cut_items = [i for i in items if i.id.startswith("cut/")]
    assert [i.error is None for i in cut_items] == [True, False]
    assert cut_items[-1].id == "cut/<shard>" and items[-1].id == "junk/<shard>"
    (unit,) = [u for u in units(paths, "webdataset") if u.name == "cut"]
    assert list(read_unit(unit)) == cut_items


def test_two_inputs_that_give_one_unit_name_are_refused(tmp_path):
    first = shard(tmp_path / "x" / "a.tar", {"1.jpg": b"1"})
    second = shard(tmp_path / "y" / "a.tar", {"1.jpg": b"2"})
    with pytest.raises(ConfigError, match=r"x/a\.tar and .*y/a\.tar both make the work unit 'a'"):
        list(units([str(first), str(second)]))
    for folder in ("x", "y"):
        (tmp_path / folder / "l.txt").write_text("p.png\n")
    with pytest.raises(ConfigError, match=r"both make the work unit 'list-l\.txt-000000'"):
        list(units([str(tmp_path / "x" / "l.txt"), str(tmp_path / "y" / "l.txt")]))


# ---- path lists ------------------------------------------------------------------------------


def old_path_list(arg: str) -> list[sources.Item]:
    """The path list reader before units (text mode, universal newlines): the reference."""
    out, base = [], Path(arg).parent
    with open(arg, encoding="utf-8-sig") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                path = line if os.path.isabs(line) else str(base / line)
                out.append(sources.Item(id=line, key=path, data=path))
    return out


def make_lists(tmp_path: Path) -> list[str]:
    one = tmp_path / "one.txt"
    one.write_bytes(
        b"\xef\xbb\xbfa.png\r\n# a comment\r\n\r\nsub/b.png\r\n  spaced.jpg  \n"
        + f"{tmp_path}/abs.png\n".encode()
        + b"mac1.png\rmac2.png\r\r#c\rcaf\xc3\xa9.png\n"
        + b"".join(f"many/{k}.png\n".encode() for k in range(11))
        + b"\n# the end\n\n"
    )
    two = tmp_path / "lists" / "two.lst"
    two.parent.mkdir()
    two.write_bytes(b"x.png\ny.png")  # no newline at the end
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"\xef\xbb\xbf# nothing here\n\n")
    return [str(one), str(empty), str(two)]


@pytest.mark.parametrize("chunk", [1, 2, 5, 1 << 20])
def test_list_units_give_the_source_items(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(sources, "_CHUNK", chunk)  # a CR LF cut by every chunk boundary
    paths = make_lists(tmp_path)
    items = check_units(paths)
    assert items == [it for p in paths for it in old_path_list(p)]  # reading is unchanged
    assert items[0].id == "a.png" and items[5].id == "mac2.png" and items[6].id == "café.png"
    assert len(items) == 20
    for unit in units(paths, "list", 4):
        start, end = unit.part
        data = Path(unit.path).read_bytes()
        assert start == 0 or data[start - 1 : start] in (b"\n", b"\r")  # at a line start
        assert end == len(data) or data[end - 1 : end] in (b"\n", b"\r")


def test_a_list_is_split_by_paths_not_lines(tmp_path):
    paths = make_lists(tmp_path)
    made = list(units(paths, "list", 4))
    assert [u.size for u in made] == [4, 4, 4, 4, 2, 2]
    assert [u.name for u in made][-2:] == ["list-one.txt-000004", "list-two.lst-000000"]
    assert count_units(paths, "list", 4) is None  # it would read the lists


def test_a_list_that_is_not_utf8_is_one_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"ok.png\n\xff\xfe.png\n")
    for read in (lambda: list(read_source([str(bad)])),
                 lambda: [i for u in units([str(bad)]) for i in read_unit(u)]):  # fmt: skip
        with pytest.raises(ConfigError, match=r"^\S+bad\.txt: line at byte 7 is not UTF-8 text$"):
            read()


def test_list_units_are_made_as_the_list_is_read(tmp_path, monkeypatch):
    lst = tmp_path / "big.txt"
    lst.write_text("".join(f"{k}.png\n" for k in range(1000)))
    monkeypatch.setattr(sources, "_CHUNK", 64)
    reads = []
    real = sources._line_blocks
    monkeypatch.setattr(
        sources, "_line_blocks", lambda f, end: (reads.append(1) or x for x in real(f, end))
    )
    first = next(units([str(lst)], "list", 10))
    assert first.part == (0, len("".join(f"{k}.png\n" for k in range(10)))) and first.size == 10
    assert len(reads) <= 2  # 64-byte blocks: the first unit's 60 bytes, not all 108 blocks


# ---- folders ---------------------------------------------------------------------------------


TREE = [
    "B.png", "a.png", "a-b.png", "a0.png", "a/x.png", "a/b/c.png", "a/b.png", "a/b-c/d.png",
    "a/.hidden.png", ".dot/e.png", "a/notes.txt", "z/deep/er/f.JPG", "z/g.webp",
]  # fmt: skip


def make_tree(top: Path, names: list[str]) -> Path:
    for name in names:
        (top / name).parent.mkdir(parents=True, exist_ok=True)
        (top / name).write_bytes(name.encode())
    return top


def old_expand(folder: Path) -> list[Path]:
    """expand_paths before the sorted walk (os.walk, then one sort): the reference order."""
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        images = [f for f in files if os.path.splitext(f)[1].lower() in IMAGE_EXTENSIONS]
        found += [Path(root) / f for f in images if not f.startswith(".")]
    return sorted(found)


def test_the_sorted_walk_keeps_expand_paths_order(tmp_path):
    top = make_tree(tmp_path / "t", TREE)
    os.symlink(top / "a", top / "link")  # a link to a folder is not followed, as before
    got = list(expand_paths([top]))
    assert got == old_expand(top) and len(got) == 10
    assert got.index(top / "a/x.png") < got.index(top / "a-b.png")  # not the string order


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "A", "a-", "a.b", "b0", "_", "é"]),
                         min_size=1, max_size=4), min_size=1, max_size=12))  # fmt: skip
def test_the_sorted_walk_keeps_expand_paths_order_for_any_tree(parts):
    with tempfile.TemporaryDirectory() as tmp:
        top = Path(tmp)
        for p in parts:
            folder = top.joinpath(*[d + "_d" for d in p[:-1]])
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{p[-1]}.png").write_bytes(b"")
            (folder / p[-1]).mkdir(exist_ok=True)
            (folder / p[-1] / "in.jpg").write_bytes(b"")
        assert list(expand_paths([top])) == old_expand(top)


def test_folder_units_give_the_source_items(tmp_path):
    top = make_tree(tmp_path / "t", TREE)
    other = make_tree(tmp_path / "other", ["1.png", "2.png", "x/3.png"])
    loose = make_tree(tmp_path, ["l1.png", "l2.jpg", "l3.txt"])
    paths = [str(loose / "l1.png"), str(top), str(loose / "l2.jpg"), str(loose / "l3.txt"),
             str(other) + "/", str(tmp_path / "missing*.png")]  # fmt: skip
    items = check_units(paths, "folder")
    assert len(items) == 17 and items[1].id == "B.png" and items[-5].id == str(loose / "l3.txt")
    made = list(units(paths, "folder", 4))
    assert [(u.name, u.size) for u in made] == [
        ("folder-files-000000", 1), ("folder-t-000000", 4), ("folder-t-000001", 4),
        ("folder-t-000002", 2), ("folder-files-000001", 2), ("folder-other-000000", 3),
        ("folder-files-000002", 1)]  # fmt: skip
    assert made[2].part == ("a/x.png", "a-b.png", "a.png", "a0.png")


def test_a_folder_given_as_dot_is_named_after_itself(tmp_path, monkeypatch):
    monkeypatch.chdir(make_tree(tmp_path / "here", ["a.png", "s/b.png"]))
    made = list(units(["."], "folder", 1))
    assert [(u.name, u.path, u.part) for u in made] == [
        ("folder-here-000000", ".", ("a.png",)),
        ("folder-here-000001", ".", ("s/b.png",)),
    ]
    assert [i.id for u in made for i in read_unit(u)] == ["a.png", "s/b.png"]


def test_folder_units_are_made_as_the_folder_is_walked(tmp_path, monkeypatch):
    top = make_tree(tmp_path / "t", [f"d{k:02d}/{j}.png" for k in range(30) for j in range(3)])
    listed = []
    real = os.scandir
    monkeypatch.setattr(os, "scandir", lambda p: listed.append(p) or real(p))
    first = next(units([str(top)], "folder", 2))
    assert first.part == ("d00/0.png", "d00/1.png")
    assert len(listed) <= 3  # the top and a folder or two, not all thirty


# ---- tables ----------------------------------------------------------------------------------


def make_tables(tmp_path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"path": "" if k % 4 == 1 else f"img/{k}.png", "uid": None if k % 3 else f"u{k}"}
            for k in range(11)]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet", row_group_size=3)
    pq.write_table(pa.Table.from_pylist(rows).slice(0, 0), tmp_path / "empty.parquet")
    (tmp_path / "t.csv").write_text("uid,path\n,a.png\nu2,\nu3,/abs/c.png\n", encoding="utf-8-sig")
    (tmp_path / "t.jsonl").write_text('{"path": "j.png"}\n\n{"path": null}\n')
    return [str(tmp_path / n) for n in ("t.parquet", "t.csv", "empty.parquet", "t.jsonl")]


def test_table_units_give_the_source_items(tmp_path):
    paths = make_tables(tmp_path)
    items = check_units(paths, "table", id_column="uid")
    assert len(items) == 16
    assert items[1].id == f"{paths[0]}:2" and items[5].id == f"{paths[0]}:6"  # empty paths
    assert items[9].id == f"{paths[0]}:10" and items[9].error == "empty path"
    made = list(units(paths, "table", 1, id_column="uid"))
    assert [(u.name, u.part, u.size) for u in made] == [
        ("table-t.parquet-000000", (0, 1), 3), ("table-t.parquet-000001", (1, 4), 3),
        ("table-t.parquet-000002", (2, 7), 3), ("table-t.parquet-000003", (3, 10), 2),
        ("table-t.csv-000000", (), None), ("table-t.jsonl-000000", (), None)]  # fmt: skip
    assert count_units(paths, "table") == 6


def test_a_table_unit_without_the_path_column_is_the_same_one_line(tmp_path):
    paths = make_tables(tmp_path)
    with pytest.raises(ConfigError, match="no column 'file'"):
        list(read_source(paths, path_column="file"))
    for unit in units(paths, path_column="file"):
        if unit.size != 0:
            with pytest.raises(ConfigError, match="no column 'file'"):
                list(read_unit(unit, path_column="file"))


# ---- Hugging Face datasets -------------------------------------------------------------------


def make_hf(tmp_path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "image": pa.array([{"bytes": bytes([k + 1]), "path": None} if k % 3 else
                           {"bytes": None, "path": f"p{k}.png"} for k in range(9)], type=image),
        "name": [f"n{k}" if k % 2 else None for k in range(9)],
    })  # fmt: skip
    mixed = tmp_path / "mixed"
    (mixed / "train").mkdir(parents=True)
    stream = pa.OSFile(str(mixed / "train" / "a.arrow"), "wb")
    with stream, pa.ipc.new_stream(stream, table.schema) as writer:  # the stream format
        writer.write_table(table, max_chunksize=2)
    whole = pa.OSFile(str(mixed / "b.arrow"), "wb")
    with whole, pa.ipc.new_file(whole, table.schema) as writer:  # the file format
        writer.write_table(table.slice(0, 4))
    pq.write_table(table, mixed / "c.parquet", row_group_size=4)
    pq.write_table(table.slice(2), tmp_path / "one.parquet", row_group_size=5)
    return [str(mixed), str(tmp_path / "one.parquet")]


def test_hf_units_give_the_source_items(tmp_path):
    paths = make_hf(tmp_path)
    for options in ({}, {"id_column": "name"}):
        items = check_units(paths, "hf", **options)
        assert len(items) == 29
    items = list(read_source(paths, "hf"))
    assert [i.id for i in items[:23]] == [*map(str, range(1, 23)), "1"]  # across the files
    made = list(units(paths, "hf"))
    assert [(u.name, u.part, u.size) for u in made] == [
        ("hf-mixed-000000", (None, 1, "mixed"), 4), ("hf-mixed-000001", (None, 5, "mixed"), 9),
        ("hf-mixed-000002", (0, 14, "mixed"), 4), ("hf-mixed-000003", (1, 18, "mixed"), 4),
        ("hf-mixed-000004", (2, 22, "mixed"), 1),
        ("hf-one.parquet-000000", (0, 1, "one.parquet"), 5),
        ("hf-one.parquet-000001", (1, 6, "one.parquet"), 2)]  # fmt: skip
    assert count_units(paths, "hf") == 7


def test_a_datasets_save_to_disk_folder_splits_into_its_files(tmp_path):
    import datasets
    from PIL import Image

    pictures = [Image.new("RGB", (4, 4), (k * 20, 0, 0)) for k in range(10)]
    ds = datasets.Dataset.from_dict({"image": pictures, "n": list(range(10))})
    ds = ds.cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "ds"), num_shards=3)
    items = check_units([str(tmp_path / "ds")])
    assert [i.id for i in items] == [str(k) for k in range(1, 11)]
    assert [u.size for u in units([str(tmp_path / "ds")])] == [4, 3, 3]
    assert Image.open(io.BytesIO(items[9].data)).getpixel((0, 0)) == (180, 0, 0)


# ---- names and bad input ---------------------------------------------------------------------


def test_safe_names(tmp_path):
    assert safe_name("00001") == "00001" and safe_name("a.b-c_D") == "a.b-c_D"
    odd = ["a b", "a_b", ".hidden", "", "x/y", "é", "a" * 300, "a" * 301, "\udcff"]
    names = [safe_name(n) for n in odd]
    assert all(SAFE.fullmatch(n) and not n.startswith(".") and len(n) < 120 for n in names)
    assert len(set(names)) == len(names) and names == [safe_name(n) for n in odd]
    lst = tmp_path / "my list (1).txt"
    lst.write_text("a.png\n")
    (unit,) = units([str(lst)])
    assert SAFE.fullmatch(unit.name) and unit.name.startswith("list-my_list__1_.txt-")


@pytest.mark.parametrize("size", [0, -1, True, 1.5, "10"])
def test_a_unit_size_below_one_is_refused(tmp_path, size):
    (tmp_path / "l.txt").write_text("a.png\n")
    for call in (units, count_units):
        with pytest.raises(ConfigError, match=r"^unit size must be a whole number of 1 or more"):
            call([str(tmp_path / "l.txt")], "list", size)


def test_missing_input_is_one_line_before_any_unit(tmp_path):
    for call in (units, count_units):
        with pytest.raises(ConfigError, match=r"^\S*nope\.tar: not found$"):
            call([str(tmp_path / "nope.tar")])
        with pytest.raises(ConfigError, match=r"^no input given$"):
            call([])
        with pytest.raises(ConfigError, match="unknown source 'zip'"):
            call([str(tmp_path)], "zip")
    with pytest.raises(ConfigError, match=r"^\S*gone\.tar: not found$"):
        read_unit(Unit("gone", "webdataset", str(tmp_path / "gone.tar")))
