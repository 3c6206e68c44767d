"""Image loading: every mode to RGB, limits before decoding, and hundreds of broken inputs."""

import io
import os
import random
import struct
import sys
import threading
import warnings
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, features

from llavaguard.errors import ImageError
from llavaguard.inputs.images import (
    IMAGE_EXTENSIONS,
    ImageLimits,
    expand_paths,
    fit_pixels,
    load_image,
    source_id,
)

RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0)


def save(im: Image.Image, path: Path, **kw) -> Path:
    im.save(path, **kw)
    return path


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def near(a: tuple[int, ...], b: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def row(im: Image.Image) -> list[int]:
    """The red channel of the first row."""
    return [im.getpixel((x, 0))[0] for x in range(im.width)]


# ---- every mode to RGB --------------------------------------------------------------------


def test_rgb_is_a_detached_copy(tmp_path):
    p = save(Image.new("RGB", (30, 20), (1, 2, 3)), tmp_path / "a.png")
    im = load_image(p)
    assert (im.mode, im.size, im.getpixel((0, 0))) == ("RGB", (30, 20), (1, 2, 3))
    assert type(im) is Image.Image and getattr(im, "fp", None) is None  # no file behind it
    p.unlink()
    assert im.getpixel((5, 5)) == (1, 2, 3)
    given_im = Image.new("RGB", (3, 3))
    assert load_image(given_im) is not given_im


def test_palette_png_with_transparency_on_white(tmp_path):
    pal = Image.new("P", (6, 4), 1)
    pal.putpalette([*RED, *GREEN] + [0] * 762)
    pal.putpixel((0, 0), 0)
    im = load_image(save(pal, tmp_path / "p.png", transparency=1))
    assert (im.mode, im.size) == ("RGB", (6, 4))
    assert im.getpixel((0, 0)) == RED and im.getpixel((3, 2)) == WHITE
    opaque = load_image(save(pal, tmp_path / "opaque.png"))
    assert opaque.getpixel((3, 2)) == GREEN
    rgba_palette = Image.new("P", (2, 2), 0)  # alpha in the palette itself, no tRNS key
    rgba_palette.putpalette([*RED, 0], "RGBA")
    assert load_image(rgba_palette).getpixel((0, 0)) == WHITE


def test_rgba_and_la_on_white(tmp_path):
    rgba = Image.new("RGBA", (5, 3), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 128))  # half transparent black: mid grey on white
    im = load_image(save(rgba, tmp_path / "t.png"))
    assert (im.mode, im.size) == ("RGB", (5, 3))
    assert im.getpixel((0, 0)) == RED and im.getpixel((4, 2)) == WHITE
    assert near(im.getpixel((1, 0)), (127, 127, 127), 2)
    la = Image.new("LA", (4, 4), (0, 0))
    la.putpixel((0, 0), (0, 255))
    im = load_image(save(la, tmp_path / "la.png"))
    assert im.getpixel((0, 0)) == BLACK and im.getpixel((1, 1)) == WHITE


def test_colour_key_transparency_on_white(tmp_path):
    rgb = Image.new("RGB", (3, 1), (10, 20, 30))
    rgb.putpixel((0, 0), RED)
    im = load_image(save(rgb, tmp_path / "key.png", transparency=(10, 20, 30)))
    assert im.getpixel((0, 0)) == RED and im.getpixel((2, 0)) == WHITE


def test_cmyk_jpeg(tmp_path):
    cmyk = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # pure red in CMYK
    im = load_image(save(cmyk, tmp_path / "c.jpg", quality=95))
    assert (im.mode, im.size) == ("RGB", (16, 8))
    assert near(im.getpixel((4, 4)), RED, 40)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    im16 = Image.new("I;16", (4, 2))
    for x, v in enumerate([0, 1000, 2000, 4000]):
        im16.putpixel((x, 0), v)
    p = save(im16, tmp_path / "16.png")
    assert Image.open(p).mode == "I;16"
    im = load_image(p)
    assert (im.mode, im.size) == ("RGB", (4, 2))
    assert near(tuple(row(im)), (0, 64, 128, 255), 1)  # clipping would give 0, 255, 255, 255
    assert im.getpixel((1, 0))[0] == im.getpixel((1, 0))[2]  # grey


def test_thirty_two_bit_int_and_float_tiff_are_scaled(tmp_path):
    i32 = Image.new("I", (3, 1))
    for x, v in enumerate([-5000, 0, 5000]):
        i32.putpixel((x, 0), v)
    assert near(tuple(row(load_image(save(i32, tmp_path / "i.tiff")))), (0, 128, 255), 1)
    f = Image.new("F", (3, 1))
    for x, v in enumerate([-1.5, 0.5, 2.5]):
        f.putpixel((x, 0), v)
    p = save(f, tmp_path / "f.tiff")
    assert Image.open(p).mode == "F"
    im = load_image(p)
    assert (im.mode, im.size) == ("RGB", (3, 1))
    assert near(tuple(row(im)), (0, 128, 255), 1)


def test_non_finite_floats_do_not_spoil_the_range():
    f = Image.new("F", (4, 1))
    for x, v in enumerate([float("inf"), 0.0, float("nan"), 2.0]):
        f.putpixel((x, 0), v)
    assert row(load_image(f)) == [255, 0, 0, 255]
    assert row(load_image(Image.new("F", (2, 1), float("nan")))) == [0, 0]


def test_one_bit(tmp_path):
    one = Image.new("1", (8, 4), 0)
    one.putpixel((7, 3), 1)
    im = load_image(save(one, tmp_path / "one.png"))
    assert (im.mode, im.size) == ("RGB", (8, 4))
    assert im.getpixel((0, 0)) == BLACK and im.getpixel((7, 3)) == WHITE


def test_animations_use_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 5), c) for c in (RED, GREEN, BLUE)]
    for name, kw in [
        ("anim.gif", {"duration": 50, "loop": 0}),
        ("anim.png", {"duration": 50}),  # APNG
        ("anim.webp", {"lossless": True}),
        ("pages.tiff", {}),
    ]:
        p = save(frames[0], tmp_path / name, save_all=True, append_images=frames[1:], **kw)
        with Image.open(p) as check:
            assert getattr(check, "n_frames", 1) == 3, name
        im = load_image(p)
        assert (im.mode, im.size, im.getpixel((2, 2))) == ("RGB", (6, 5), RED), name


def test_a_given_image_on_a_later_frame_goes_back_to_the_first(tmp_path):
    frames = [Image.new("RGB", (6, 6), c) for c in (RED, GREEN)]
    p = save(frames[0], tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with Image.open(p) as im:
        im.seek(1)
        assert load_image(im).getpixel((1, 1)) == RED


def test_exif_orientation_applied(tmp_path):
    im = Image.new("RGB", (40, 20), BLUE)
    im.paste(RED, (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # display rotated 90 degrees clockwise
    out = load_image(save(im, tmp_path / "rot.jpg", exif=exif, quality=95))
    assert (out.mode, out.size) == ("RGB", (20, 40))
    assert near(out.getpixel((10, 5)), RED, 30) and near(out.getpixel((10, 34)), BLUE, 30)
    # a loaded image is final: loading it again (as the Guard does with the server's and the
    # annotator's decoded images) must not rotate it a second time
    again = load_image(out)
    assert again.size == (20, 40) and again.tobytes() == out.tobytes()


def test_corrupt_exif_means_upright(tmp_path):
    data = bytearray(encode(Image.new("RGB", (8, 4), RED), "JPEG", exif=b"Exif\0\0II*\0garbage"))
    im = load_image(bytes(data))
    assert im.size == (8, 4) and near(im.getpixel((1, 1)), RED, 30)


@pytest.mark.parametrize(
    ("fmt", "ext", "mode", "kw"),
    [
        ("TIFF", "tiff", "RGB", {}),
        ("TIFF", "tif", "CMYK", {"compression": "tiff_lzw"}),
        ("WEBP", "webp", "RGB", {"lossless": True}),
        ("WEBP", "webp", "RGBA", {"lossless": True}),
        ("BMP", "bmp", "RGB", {}),
        ("BMP", "bmp", "L", {}),
        ("PNG", "png", "RGB", {}),
        ("GIF", "gif", "RGB", {}),
        ("JPEG", "jpeg", "L", {"quality": 95}),
        ("PPM", "ppm", "RGB", {}),
        ("PPM", "pgm", "L", {}),
        ("PPM", "pbm", "1", {}),
        ("ICO", "ico", "RGBA", {"sizes": [(32, 24)]}),
    ],
)
def test_formats(tmp_path, fmt, ext, mode, kw):
    base = Image.new("RGB", (32, 24), (200, 40, 40))
    base.paste((20, 20, 220), (16, 0, 32, 24))
    src = base.convert(mode)
    im = load_image(save(src, tmp_path / f"x.{ext}", format=fmt, **kw))
    assert (im.mode, im.size) == ("RGB", (32, 24))
    expect = src.convert("RGB")
    for xy in [(3, 3), (28, 20)]:
        assert near(im.getpixel(xy), expect.getpixel(xy), 24), (xy, im.getpixel(xy))


@pytest.mark.parametrize(
    "mode", ["YCbCr", "LAB", "HSV", "RGBX", "La", "RGBa", "PA", "I;16B", "I;16L", "I;16N"]
)
def test_every_other_mode(mode):
    im = load_image(Image.new(mode, (3, 2)))
    assert (im.mode, im.size) == ("RGB", (3, 2))


def test_sixteen_bit_big_endian_scaled():
    im = Image.new("I;16B", (3, 1))
    for x, v in enumerate([100, 300, 500]):
        im.putpixel((x, 0), v)
    assert near(tuple(row(load_image(im))), (0, 128, 255), 1)


def test_inputs_of_every_kind(tmp_path):
    p = save(Image.new("RGB", (5, 4)), tmp_path / "x.png")
    for source in (p, str(p), p.read_bytes(), bytearray(p.read_bytes()), Image.open(p)):
        assert load_image(source).size == (5, 4)


def test_unsupported_input_types_and_formats(tmp_path):
    for bad in (None, 12, 3.5, ["x.png"]):
        with pytest.raises(ImageError, match="unsupported input type"):
            load_image(bad)  # type: ignore[arg-type]
    # EPS would run Ghostscript, TGA is outside the list: both refused, never decoded
    for fmt in ("EPS", "TGA"):
        p = save(Image.new("RGB", (8, 8)), tmp_path / f"x.{fmt.lower()}", format=fmt)
        with pytest.raises(ImageError, match=r"not an image file, or not one of JPEG, PNG"):
            load_image(p)


def test_name_overrides_the_label(tmp_path):
    with pytest.raises(ImageError, match=r"^item 7: empty file"):
        load_image(b"", name="item 7")
    with pytest.raises(ImageError, match=r"^<bytes>: "):
        load_image(b"junk")
    with pytest.raises(ImageError, match=r"^<PIL image>: empty image \(0x5 pixels\)"):
        load_image(Image.new("RGB", (0, 5)))


def test_source_ids(tmp_path):
    p = save(Image.new("RGB", (5, 5)), tmp_path / "x.png")
    assert source_id("./photos/a.jpg", 0) == "./photos/a.jpg"  # as given, not normalised
    assert source_id(p, 0) == str(p)
    assert source_id(b"x", 3) == "bytes-3"
    assert source_id(Image.new("L", (1, 1)), 2) == "image-2"
    with Image.open(p) as im:
        assert source_id(im, 2) == str(p)
    assert source_id(None, 4) == "input-4"  # type: ignore[arg-type]


def test_fit_pixels():
    im = Image.new("RGB", (400, 100))
    assert fit_pixels(im, 10_000).size == (200, 50)
    assert fit_pixels(im, 40_000) is im


def test_image_extensions():
    assert {".jpg", ".jpeg", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"} | {
        ".ppm", ".pgm", ".pbm", ".ico",
    } <= IMAGE_EXTENSIONS  # fmt: skip
    assert all(e == e.lower() and e.startswith(".") for e in IMAGE_EXTENSIONS)
    assert (".avif" in IMAGE_EXTENSIONS) == bool(features.check_module("avif"))


@pytest.mark.skipif(".avif" not in IMAGE_EXTENSIONS, reason="this Pillow cannot open AVIF")
def test_avif(tmp_path):
    im = load_image(save(Image.new("RGB", (16, 16), RED), tmp_path / "x.avif", quality=95))
    assert im.size == (16, 16) and near(im.getpixel((8, 8)), RED, 30)


# ---- limits ---------------------------------------------------------------------------------


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR (with a correct CRC) claims a size, with almost no pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def test_bomb_refused_before_decoding(tmp_path):
    p = tmp_path / "bomb.png"
    p.write_bytes(png_header_only(100_000, 100_000))
    with pytest.raises(Image.DecompressionBombError):
        Image.open(p)  # Pillow itself refuses this one in open(), with its own exception type
    with pytest.raises(ImageError, match=r"bomb\.png: image too large \(.*10000000000 pixels"):
        load_image(p)
    # our own limit, checked from the header: the pixel data is broken, yet the size is reported
    small = tmp_path / "small-bomb.png"
    small.write_bytes(png_header_only(5000, 5000))
    with pytest.raises(ImageError, match=r"image too large \(5000x5000 = 25000000 pixels > 1000"):
        load_image(small, limits=ImageLimits(max_pixels=1_000_000))
    with pytest.raises(ImageError, match=r"truncated|broken|image file"):
        load_image(small)


def test_pillow_bomb_warning_becomes_an_error_not_a_warning(tmp_path):
    side = int((Image.MAX_IMAGE_PIXELS * 1.5) ** 0.5)  # between Pillow's warning and its error
    p = tmp_path / "warned.png"
    p.write_bytes(png_header_only(side, side))
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with pytest.raises(ImageError, match=r"warned\.png: image too large"):
            load_image(p, limits=ImageLimits(max_pixels=10**12))
    assert not [w for w in seen if issubclass(w.category, Image.DecompressionBombWarning)]


def test_icon_frames_are_checked_before_pillow_decodes_them():
    big = encode(Image.new("RGB", (300, 300), RED), "PNG")
    directory = struct.pack("<HHH", 0, 1, 1) + struct.pack("<BBBBHHII", 16, 16, 0, 0, 1, 32,
                                                            len(big), 22)  # fmt: skip
    ico = directory + big  # the directory says 16x16, the frame is 300x300
    with pytest.raises(ImageError, match=r"icon frame 300x300 = 90000 pixels > 10000"):
        load_image(ico, limits=ImageLimits(max_pixels=10_000))
    assert load_image(ico).size == (300, 300)


def test_limits_are_validated():
    assert ImageLimits().max_pixels == 80_000_000 and ImageLimits().max_bytes == 64 << 20
    with pytest.raises(ValueError):
        ImageLimits(max_pixels=0)
    with pytest.raises(ValueError):
        ImageLimits(max_pixel=5)  # type: ignore[call-arg]  # a typo is not silently ignored
    with pytest.raises(ValueError):
        ImageLimits().max_bytes = 5  # type: ignore[misc]


def test_file_size_limit(tmp_path):
    p = save(Image.effect_noise((200, 200), 50), tmp_path / "n.png")
    with pytest.raises(ImageError, match=r"n\.png: file too large \(\d+ bytes > 1000\)"):
        load_image(p, limits=ImageLimits(max_bytes=1000))
    with pytest.raises(ImageError, match=r"<bytes>: file too large"):
        load_image(p.read_bytes(), limits=ImageLimits(max_bytes=1000))


def test_file_size_is_checked_before_reading(tmp_path):
    p = tmp_path / "huge.jpg"
    try:
        with open(p, "wb") as f:
            f.truncate(16 << 30)  # sparse: reading it would take seconds and 16 GiB
    except OSError:
        pytest.skip("no sparse files here")
    with pytest.raises(ImageError, match=r"huge\.jpg: file too large \(17179869184 bytes"):
        load_image(p)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX only")
def test_special_files_are_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match=r"pipe\.png: not a regular file"):
        load_image(fifo)  # opening a FIFO for reading would wait for a writer forever
    if os.path.exists("/dev/zero"):
        with pytest.raises(ImageError, match="not a regular file"):
            load_image("/dev/zero")


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0, reason="root reads anything"
)  # fmt: skip
def test_permission_denied(tmp_path):
    p = save(Image.new("RGB", (2, 2)), tmp_path / "secret.png")
    p.chmod(0)
    with pytest.raises(ImageError, match=r"secret\.png: permission denied"):
        load_image(p)


def test_threads_leave_the_warning_filters_as_they_were(tmp_path):
    good = save(Image.new("RGB", (64, 64), RED), tmp_path / "good.png")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header_only(100_000, 100_000))
    before = list(warnings.filters)
    errors: list[BaseException] = []

    def work() -> None:
        for _ in range(20):
            try:
                assert load_image(good).size == (64, 64)
                with pytest.raises(ImageError):
                    load_image(bomb)
            except BaseException as e:  # reported below
                errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and warnings.filters == before


# ---- the corpus of broken inputs ------------------------------------------------------------


def _valid_files() -> dict[str, bytes]:
    rng = random.Random(7)
    base = Image.frombytes("RGB", (64, 48), rng.randbytes(64 * 48 * 3))
    return {
        "jpg": encode(base, "JPEG", quality=80),
        "progressive.jpg": encode(base, "JPEG", quality=80, progressive=True),
        "png": encode(base, "PNG"),
        "gif": encode(base.convert("P"), "GIF"),
        "webp": encode(base, "WEBP"),
        "bmp": encode(base, "BMP"),
        "tiff": encode(base, "TIFF"),
    }


_FILES = _valid_files()
CORPUS_LIMITS = ImageLimits(max_bytes=max(len(data) for data in _FILES.values()))


def broken_corpus(root: Path) -> tuple[list[Path], dict[str, list[Path]]]:
    """(inputs that may or may not decode, {class: inputs that must be refused})."""
    rng = random.Random(1234)
    maybe: list[Path] = []
    must_fail: dict[str, list[Path]] = {}
    for ext, data in _FILES.items():
        fractions = {int(len(data) * i / 40) for i in range(1, 40)}
        for cut in sorted(fractions | {1, 2, 8, 16, 33, len(data) - 1}):  # truncated
            p = root / f"trunc-{cut}.{ext}"
            p.write_bytes(data[:cut])
            maybe.append(p)
        for i in range(12):  # bits flipped in the header
            b = bytearray(data)
            for _ in range(3):
                b[rng.randrange(min(64, len(b)))] ^= 1 << rng.randrange(8)
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
    # a fixed selection of known-bad headers: a few each
    for i, (w, h) in enumerate([(0, 10), (10, 0), (2**31 - 1, 1), (1, 2**31 - 1)]):
        p = root / f"header-{i}.png"
        p.write_bytes(png_header_only(w, h))
        must_fail.setdefault("degenerate or absurd size", []).append(p)

    def bad(kind: str, name: str, data: bytes | str | None) -> None:
        p = root / name
        if isinstance(data, bytes):
            p.write_bytes(data)
        elif isinstance(data, str):
            p.write_text(data)
        must_fail.setdefault(kind, []).append(p)

    for i in range(30):
        bad("random bytes", f"random-{i}.jpg", rng.randbytes(rng.randint(1, 4000)))
    bad("zero-length", "empty.png", b"")
    bad("text", "text.jpg", "this is not an image\n" * 20)
    bad("bomb", "bomb.png", png_header_only(100_000, 100_000))
    (root / "a-directory.png").mkdir()
    bad("directory", "a-directory.png", None)
    bad("missing", "missing.png", None)
    padding = b"\0" * (CORPUS_LIMITS.max_bytes + 1 - len(_FILES["png"]))
    bad("over-size", "big.png", _FILES["png"] + padding)  # one byte over the corpus' limit
    return maybe, must_fail


def test_hundreds_of_broken_files_give_one_line_errors(tmp_path):
    maybe, must_fail = broken_corpus(tmp_path)
    refused = [p for paths in must_fail.values() for p in paths]
    assert len(maybe) + len(refused) >= 300
    errors = 0
    for p in maybe + refused:
        try:
            im = load_image(p, limits=CORPUS_LIMITS)
        except ImageError as e:
            msg = str(e)
            assert "\n" not in msg and msg.startswith(f"{p}: ") and len(msg) < 300, msg
            errors += 1
            continue
        except BaseException as e:
            pytest.fail(f"{p.name}: {type(e).__name__} escaped: {e}")
        assert p not in refused, p
        assert im.mode == "RGB" and im.width > 0 and im.height > 0
        if p.name.startswith("trunc-"):  # a cut file is refused unless only trailers were cut
            full = load_image(_FILES[p.name.split(".", 1)[1]])
            assert im.tobytes() == full.tobytes(), f"{p.name}: garbage from a truncated file"
    assert errors >= len(refused) + 200  # nearly every truncation and many flips are caught


def test_messages_say_what_is_wrong(tmp_path):
    _, must_fail = broken_corpus(tmp_path)
    expected = {
        "zero-length": "empty file",
        "random bytes": "not an image file",
        "text": "not an image file",
        "bomb": "image too large",
        "over-size": "file too large",
        "missing": "file not found",
        "directory": "is a directory",
        "degenerate or absurd size": "",
    }
    for kind, paths in must_fail.items():
        for p in paths:
            with pytest.raises(ImageError) as info:
                load_image(p, limits=CORPUS_LIMITS)
            assert expected[kind] in str(info.value), (kind, str(info.value))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(_FILES["jpg"][:2000])
    with pytest.raises(ImageError, match=rf"^{cut}: image file is truncated"):
        load_image(cut)


# ---- properties ------------------------------------------------------------------------------


def _outcome(data: bytes) -> Image.Image | None:
    try:
        im = load_image(data)
    except ImageError as e:
        assert "\n" not in str(e) and str(e).startswith("<bytes>: ")
        return None
    assert im.mode == "RGB" and im.width > 0 and im.height > 0
    return im


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data):
    _outcome(data)


_MAGIC = [
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
    b"\xff\xd8\xff\xe0",
    b"GIF89a",
    b"BM",
    b"II*\0",
    b"MM\0*",
    b"RIFF\0\0\0\0WEBPVP8 ",
    b"P6\n",
    b"\0\0\1\0\1\0",
]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_MAGIC), st.binary(max_size=512))
def test_arbitrary_bytes_behind_a_real_signature(magic, rest):
    """Past the format sniffing, into each plugin's header parser."""
    _outcome(magic + rest)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_truncated_or_mutated_file(data):
    """A cut file fails unless only trailer bytes were cut; a mutated one may decode."""
    ext = data.draw(st.sampled_from(sorted(_FILES)))
    raw = bytearray(_FILES[ext])
    cut = data.draw(st.integers(0, len(raw) - 1))
    im = _outcome(bytes(raw[:cut]))
    if im is not None:
        assert im.tobytes() == load_image(bytes(raw)).tobytes(), f"garbage: {ext} cut at {cut}"
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, min(len(raw), 200) - 1))] = data.draw(st.integers(0, 255))
    _outcome(bytes(raw))


# ---- folders ---------------------------------------------------------------------------------


def test_expand_paths(tmp_path):
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    names = ["z.JPG", "a.png", "B.Jpeg", "b/c/d.webp", "b/x.txt", "b/e.TIFF", "noext"]
    names += [".secret.png", ".hidden/h.png"]
    for name in names:
        (tmp_path / name).write_bytes(b"not even an image: expand_paths never looks")
    explicit = tmp_path / "b" / "x.txt"
    got = list(expand_paths([tmp_path, explicit, tmp_path / "missing.png", str(tmp_path / "b")]))
    assert got == [
        tmp_path / "B.Jpeg",
        tmp_path / "a.png",
        tmp_path / "b" / "c" / "d.webp",
        tmp_path / "b" / "e.TIFF",
        tmp_path / "z.JPG",
        explicit,  # not an image extension, but asked for by name
        tmp_path / "missing.png",  # kept, so that it gets its own error record
        tmp_path / "b" / "c" / "d.webp",
        tmp_path / "b" / "e.TIFF",
    ]
    assert list(expand_paths([])) == []
    assert list(expand_paths([tmp_path / ".hidden"])) == [tmp_path / ".hidden" / "h.png"]
