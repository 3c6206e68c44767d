"""Image loading: every mode to RGB, limits before decoding, and hundreds of broken files."""

import io
import random
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from llavaguard.errors import ImageError
from llavaguard.images import ImageLimits, expand_paths, load_image, source_id


def save(im: Image.Image, path: Path, **kw) -> Path:
    im.save(path, **kw)
    return path


def test_rgb_passthrough_is_a_detached_copy(tmp_path):
    p = save(Image.new("RGB", (30, 20), (1, 2, 3)), tmp_path / "a.png")
    im = load_image(p)
    assert (im.mode, im.size, im.getpixel((0, 0))) == ("RGB", (30, 20), (1, 2, 3))
    p.unlink()  # no open handle left behind
    assert im.getpixel((5, 5)) == (1, 2, 3)


def test_transparency_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    im = load_image(save(rgba, tmp_path / "t.png"))
    assert im.getpixel((1, 1)) == (255, 255, 255) and im.getpixel((0, 0)) == (255, 0, 0)
    la = Image.new("LA", (4, 4), (0, 0))
    assert load_image(save(la, tmp_path / "la.png")).getpixel((0, 0)) == (255, 255, 255)
    pal = Image.new("P", (4, 4), 1)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    pal.info["transparency"] = 1
    assert load_image(save(pal, tmp_path / "p.png", transparency=1)).getpixel((0, 0)) == (
        255, 255, 255,
    )  # fmt: skip


def test_palette_cmyk_one_bit(tmp_path):
    pal = Image.new("RGB", (8, 8), (0, 0, 255)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert load_image(save(pal, tmp_path / "p.gif")).getpixel((1, 1)) == (0, 0, 255)
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    r, g, b = load_image(save(cmyk, tmp_path / "c.jpg", quality=95)).getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60
    one = Image.new("1", (8, 8), 1)
    assert load_image(save(one, tmp_path / "one.png")).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_and_float_are_scaled_not_clipped(tmp_path):
    im16 = Image.new("I;16", (4, 1))
    for x, v in enumerate([0, 1000, 2000, 4000]):
        im16.putpixel((x, 0), v)
    out = load_image(save(im16, tmp_path / "16.png"))
    values = [out.getpixel((x, 0))[0] for x in range(4)]
    assert values[0] == 0 and values[-1] == 255 and 50 < values[1] < 80  # 1000/4000*255≈64
    f = Image.new("F", (2, 1))
    f.putpixel((0, 0), -1.5)
    f.putpixel((1, 0), 2.5)
    out = load_image(save(f, tmp_path / "f.tiff"))
    assert [out.getpixel((x, 0))[0] for x in range(2)] == [0, 255]


def test_animation_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 255, 0))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=50, loop=0)
    assert load_image(p).getpixel((2, 2)) == (255, 0, 0)
    webp = tmp_path / "anim.webp"
    frames[0].save(webp, save_all=True, append_images=frames[1:], lossless=True)
    assert load_image(webp).getpixel((2, 2)) == (255, 0, 0)


def test_exif_orientation_applied(tmp_path):
    im = Image.new("RGB", (40, 20), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    p = save(im, tmp_path / "rot.jpg", exif=exif)
    assert load_image(p).size == (20, 40)


@pytest.mark.parametrize("fmt", ["TIFF", "WEBP", "BMP", "PPM", "ICO", "TGA"])
def test_other_formats(tmp_path, fmt):
    p = save(Image.new("RGB", (16, 12), (9, 9, 9)), tmp_path / f"x.{fmt.lower()}", format=fmt)
    im = load_image(p)
    assert im.mode == "RGB" and im.size[0] > 0


def test_inputs_of_every_kind(tmp_path):
    p = save(Image.new("RGB", (5, 5)), tmp_path / "x.png")
    assert load_image(p.read_bytes()).size == (5, 5)
    assert load_image(str(p)).size == (5, 5)
    assert load_image(Image.new("L", (3, 3))).mode == "RGB"
    assert source_id(b"x", 3) == "bytes-3" and source_id(Image.new("L", (1, 1)), 2) == "image-2"
    assert source_id(p, 0) == str(p)


# ---- limits ------------------------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims a size, with (almost) no pixel data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_bomb_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(png_header_only(100_000, 100_000))
    with pytest.raises(ImageError, match=r"bomb\.png: image too large \(.*10000000000 pixels"):
        load_image(p)
    with pytest.raises(ImageError, match="image too large"):
        load_image(
            save(Image.new("RGB", (100, 100)), tmp_path / "x.png"),
            limits=ImageLimits(max_pixels=9999),
        )


def test_file_size_limit(tmp_path):
    p = save(Image.effect_noise((200, 200), 50), tmp_path / "n.png")
    with pytest.raises(ImageError, match="file too large"):
        load_image(p, limits=ImageLimits(max_bytes=1000))
    with pytest.raises(ImageError, match="file too large"):
        load_image(p.read_bytes(), limits=ImageLimits(max_bytes=1000))


# ---- the corpus of broken inputs ---------------------------------------------------------


def _valid_files() -> dict[str, bytes]:
    rng = random.Random(7)
    base = Image.frombytes("RGB", (64, 48), rng.randbytes(64 * 48 * 3))
    out = {}
    for fmt, ext, kw in [
        ("JPEG", "jpg", {"quality": 80}),
        ("PNG", "png", {}),
        ("GIF", "gif", {}),
        ("WEBP", "webp", {}),
        ("BMP", "bmp", {}),
        ("TIFF", "tiff", {}),
    ]:
        buf = io.BytesIO()
        base.save(buf, format=fmt, **kw)
        out[ext] = buf.getvalue()
    return out


def broken_corpus(root: Path) -> tuple[list[Path], list[Path]]:
    """(inputs that may or may not decode, inputs that must be refused)."""
    rng = random.Random(1234)
    maybe, must_fail = [], []
    for ext, data in _valid_files().items():
        cuts = sorted({int(len(data) * f) for f in [i / 40 for i in range(1, 40)]} | {1, 8, 16, 33})
        for cut in cuts:  # truncated at many offsets
            p = root / f"trunc-{cut}.{ext}"
            p.write_bytes(data[:cut])
            maybe.append(p)
        for i in range(12):  # header bytes flipped
            b = bytearray(data)
            for _ in range(3):
                pos = rng.randrange(min(64, len(b)))
                b[pos] ^= 1 << rng.randrange(8)
            p = root / f"flip-{i}.{ext}"
            p.write_bytes(bytes(b))
            maybe.append(p)
        for i in range(6):  # body bytes scrambled
            b = bytearray(data)
            for _ in range(40):
                b[rng.randrange(len(b) // 4, len(b))] = rng.randrange(256)
            p = root / f"scramble-{i}.{ext}"
            p.write_bytes(bytes(b))
            maybe.append(p)
    for i in range(30):
        p = root / f"random-{i}.jpg"
        p.write_bytes(rng.randbytes(rng.randint(1, 4000)))
        must_fail.append(p)
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("this is not an image\n" * 20)
    (root / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    (root / "zero.png").write_bytes(png_header_only(0, 10))
    (root / "a-directory.png").mkdir()
    must_fail += [root / n for n in ("empty.png", "text.jpg", "bomb.png", "zero.png")]
    must_fail += [root / "a-directory.png", root / "missing.png"]
    return maybe, must_fail


def test_hundreds_of_broken_files_give_one_line_errors(tmp_path):
    maybe, must_fail = broken_corpus(tmp_path)
    assert len(maybe) + len(must_fail) >= 300
    outcomes = {"ok": 0, "error": 0}
    for p in maybe + must_fail:
        try:
            im = load_image(p, name=p.name)
        except ImageError as e:
            msg = str(e)
            assert "\n" not in msg and msg.startswith(p.name + ": "), msg
            outcomes["error"] += 1
            continue
        assert p not in must_fail, p
        assert im.mode == "RGB" and im.width > 0
        outcomes["ok"] += 1
    assert outcomes["error"] >= len(must_fail) + 100  # most truncations are caught


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data):
    try:
        im = load_image(data)
    except ImageError as e:
        assert "\n" not in str(e)
    else:
        assert im.mode == "RGB"


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_any_truncated_file(data):
    """A cut file fails, unless only trailer bytes were cut: then it is the whole image."""
    ext = data.draw(st.sampled_from(sorted(_FILES)))
    raw = _FILES[ext]
    cut = data.draw(st.integers(0, len(raw) - 1))
    try:
        im = load_image(raw[:cut])
    except ImageError:
        return
    assert im.tobytes() == load_image(raw).tobytes(), f"garbage from a {ext} cut at {cut}"


_FILES = _valid_files()


# ---- folders -----------------------------------------------------------------------------


def test_expand_paths(tmp_path):
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ["z.JPG", "a.png", "b/c/d.webp", "b/x.txt", ".secret.png", ".hidden/h.png"]:
        (tmp_path / name).write_bytes(b"x")
    explicit = tmp_path / "b" / "x.txt"
    got = list(expand_paths([tmp_path, explicit, tmp_path / "missing.png"]))
    assert got == [
        tmp_path / "a.png",
        tmp_path / "b" / "c" / "d.webp",
        tmp_path / "z.JPG",
        explicit,
        tmp_path / "missing.png",
    ]
