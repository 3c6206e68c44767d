"""Turning user inputs (paths, bytes, PIL images) into RGB images a VLM can take, safely.

Inputs are untrusted: anything a user points the checker at may be truncated, mislabelled,
hostile or simply not an image. So every input is checked against size limits before it is
decoded (decompression bombs), fully decoded here (a truncated file fails on its own record,
not inside a model batch) and normalised: EXIF orientation applied, first frame of an
animation, every pixel mode to 8-bit RGB with transparency composited on white. Whatever goes
wrong becomes one ImageError line that names the input; no other exception escapes.

It deliberately knows nothing about models or policies: no resizing for a processor, no
normalisation, no tensors (``fit_pixels`` is the one size knob engines share). It only opens
the common photo and web formats, never Pillow's rarer plugins (EPS would run Ghostscript).
"""

from __future__ import annotations

import io
import math
import os
import stat
import struct
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

from llavaguard.errors import ImageError
from llavaguard.inputs.limits import ImageLimits

ImageSource = str | os.PathLike | bytes | Image.Image


def _can_open(fmt: str) -> bool:
    """Registered, and its codec built in (Pillow registers AVIF even when libavif is absent)."""
    try:
        Image.init()
        opener = Image.OPEN.get(fmt)
        if opener is None:
            return False
        module = sys.modules.get(getattr(opener[0], "__module__", ""), None)
        return bool(getattr(module, "SUPPORTED", True))
    except Exception:
        return False


# Camera JPEGs often open as MPO; Pillow reaches that through the JPEG opener.
_FORMATS: tuple[str, ...] = tuple(
    fmt
    for fmt in ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "PPM", "ICO", "AVIF", "HEIF")
    if fmt in {"JPEG", "PNG", "GIF", "BMP", "TIFF", "PPM", "ICO"} or _can_open(fmt)
)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    [".jpg", ".jpeg", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"]
    + [".ppm", ".pgm", ".pbm", ".ico"]
    + ([".avif"] if "AVIF" in _FORMATS else [])
    + ([".heic"] if "HEIF" in _FORMATS else [])
)


# ---- loading ------------------------------------------------------------------------------

# warnings filters are process-wide (before Python 3.14), and catch_warnings() restores the
# list it saved on exit: two threads inside it at once can leave each other's filters behind.
# The lock keeps our own threads from doing that; the filters only touch Pillow's warnings.
_WARNINGS_LOCK = threading.Lock()


@contextmanager
def _pillow_warnings() -> Iterator[None]:
    """Pillow's decompression-bomb warning raises; its corrupt-metadata chatter stays quiet.

    Metadata warnings are dropped because decoding the pixels is the verdict on a file.
    """
    with _WARNINGS_LOCK, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        yield


def load_image(
    source: ImageSource, *, limits: ImageLimits | None = None, name: str | None = None
) -> Image.Image:
    """A new, fully decoded RGB image, or ImageError; never any other exception.

    ``name`` replaces the label messages start with (default: the path, ``<bytes>`` or
    ``<PIL image>``). A PIL image that is on a later frame is moved back to frame 0.
    """
    label = _label(source, name)
    fmt: str | None = None  # known once Pillow has recognised the file
    try:
        limits = limits if limits is not None else ImageLimits()
        if isinstance(source, Image.Image):
            fmt = source.format
            with _pillow_warnings():
                return _decode(source, limits, label)
        data = _read(source, limits, label)
        fmt = sniff_format(data)
        _check_ico_frames(data, limits, label)
        with _pillow_warnings(), Image.open(io.BytesIO(data), formats=_FORMATS) as im:
            fmt = im.format
            return _decode(im, limits, label)
    except ImageError:
        raise
    except Exception as e:  # Pillow raises many types for bad data; report them all alike
        raise ImageError(f"{label}: {_reason(e, fmt)}") from e


# What one image costs in memory on its way to a model, a pixel: Pillow holds RGB as 4 bytes,
# and about three such copies live at once (the decoded file, its RGB conversion, an image
# processor's arrays). Measured: a 6300x6300 1-bit PNG (4.9 KB) took 189 MB decoded to RGB
# and peaked at 536 MB more in a processor, 13.5 bytes a pixel.
DECODED_BYTES_PER_PIXEL = 4 * 3


def decoded_bytes(
    source: bytes, *, limits: ImageLimits | None = None, name: str | None = None
) -> int:
    """The memory decoding ``source`` will take (``DECODED_BYTES_PER_PIXEL`` a pixel), from
    its header alone: Pillow reads no pixel until asked, so a small file that decodes to a
    huge buffer is known before it costs anything. ImageError for what ``load_image`` would
    refuse from the header (not an image, over the limits)."""
    label = _label(source, name)
    try:
        limits = limits if limits is not None else ImageLimits()
        data = _read(source, limits, label)
        _check_ico_frames(data, limits, label)
        with _pillow_warnings(), Image.open(io.BytesIO(data), formats=_FORMATS) as im:
            _check_size(im, limits, label)
            return im.width * im.height * DECODED_BYTES_PER_PIXEL
    except ImageError:
        raise
    except Exception as e:
        raise ImageError(f"{label}: {_reason(e, sniff_format(bytes(source[:16])))}") from e


def _own_name(source: object) -> str | None:
    """A path as given, or the file a PIL image was opened from; None for anything else.
    Never raises."""
    if isinstance(source, Image.Image):
        return _filename(source) or None
    if isinstance(source, str | os.PathLike):
        try:
            return os.fsdecode(source)
        except Exception:
            return None
    return None


def _label(source: object, name: str | None) -> str:
    if name is not None:
        return str(name)
    if isinstance(source, bytes | bytearray | memoryview):
        return "<bytes>"
    own = _own_name(source)
    if own is not None:
        return own
    return "<PIL image>" if isinstance(source, Image.Image) else f"<{type(source).__name__}>"


def _filename(im: Image.Image) -> str:
    filename = getattr(im, "filename", "")
    return os.fsdecode(filename) if isinstance(filename, str | bytes) else ""


_VAGUE = ("could not create decoder object", "cannot load this image", "decoder error")


def _reason(e: BaseException, fmt: str | None) -> str:
    """A short cause for the message; Pillow's own texts are kept where they say something,
    and the format is named where they do not."""
    text = " ".join(str(e).split())
    text = text if len(text) <= 160 else text[:157] + "..."
    corrupt = f"corrupt {fmt} image" if fmt else "corrupt image data"
    if isinstance(e, Image.UnidentifiedImageError):
        if fmt:  # the signature is right, yet Pillow's parser gave up on the header
            return f"{corrupt} (unreadable header)"
        return f"not an image file, or not one of {', '.join(_FORMATS)}"
    if isinstance(e, Image.DecompressionBombError | Image.DecompressionBombWarning):
        return f"image too large ({text})"
    if isinstance(e, MemoryError):
        return "not enough memory to decode"
    if isinstance(e, FileNotFoundError):
        return "file not found"
    if isinstance(e, IsADirectoryError):
        return "is a directory"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, OSError) and e.filename is not None and e.strerror:
        return e.strerror.lower()  # a system call failed: its text names the path again
    if isinstance(e, ValueError) and "closed" in text:  # a PIL image whose file was closed
        return f"image closed before it was loaded ({text})"
    if text == "Truncated File Read":
        return "image file is truncated (in the header)"
    if isinstance(e, OSError) and text.startswith(_VAGUE):
        return f"{corrupt} ({text})"
    if isinstance(e, OSError) and text:
        return text  # Pillow's decoder errors: "image file is truncated", "broken data stream"
    # SyntaxError, ValueError, struct.error, EOFError, KeyError ... from a malformed header
    return f"{corrupt} ({type(e).__name__}: {text})" if text else corrupt


_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\0", "TIFF"),
    (b"MM\0*", "TIFF"),
    (b"\0\0\1\0", "ICO"),
)


def sniff_format(data: bytes) -> str | None:
    """The format a file claims to be by its first bytes (nothing decoded): to name it when
    Pillow fails before saying so, and to give an image kept as bytes its file extension."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((fmt for magic, fmt in _SIGNATURES if data.startswith(magic)), None)


def _read(source: object, limits: ImageLimits, label: str) -> bytes:
    """The bytes of a file or buffer, refusing oversize input before reading it."""
    if isinstance(source, bytes | bytearray | memoryview):
        size = memoryview(source).nbytes
        if size > limits.max_bytes:
            raise ImageError(f"{label}: file too large ({size} bytes > {limits.max_bytes})")
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):
        data = _read_file(source, limits, label)
    else:
        raise ImageError(
            f"{label}: unsupported input type {type(source).__name__} "
            "(expected a path, bytes or a PIL image)"
        )
    if not data:
        raise ImageError(f"{label}: empty file (0 bytes)")
    return data


def _read_file(path: str | os.PathLike, limits: ImageLimits, label: str) -> bytes:
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below anyway.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except ValueError as e:  # a NUL byte in the path
        raise ImageError(f"{label}: invalid path ({e})") from e
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if stat.S_ISDIR(info.st_mode):
            raise ImageError(f"{label}: is a directory")
        if not stat.S_ISREG(info.st_mode):  # /dev/zero, a FIFO, a socket: no size to trust
            raise ImageError(f"{label}: not a regular file")
        if info.st_size > limits.max_bytes:
            raise ImageError(f"{label}: file too large ({info.st_size} bytes > {limits.max_bytes})")
        data = f.read(limits.max_bytes + 1)  # it may have grown since fstat
    if len(data) > limits.max_bytes:
        raise ImageError(f"{label}: file too large (> {limits.max_bytes} bytes)")
    return data


def _check_size(im: Image.Image, limits: ImageLimits, label: str) -> None:
    width, height = im.size
    if width < 1 or height < 1:
        raise ImageError(f"{label}: empty image ({width}x{height} pixels)")
    if width * height > limits.max_pixels:
        raise ImageError(
            f"{label}: image too large ({width}x{height} = {width * height} pixels"
            f" > {limits.max_pixels})"
        )


def _check_ico_frames(data: bytes, limits: ImageLimits, label: str) -> None:
    """Pillow decodes an icon's largest frame inside Image.open, and a PNG or DIB frame may be
    far larger than the directory's <= 256 px says: read every frame's own header first."""
    if not data.startswith(b"\0\0\1\0") or len(data) < 6:
        return
    count = int.from_bytes(data[4:6], "little")
    for entry in range(6, min(6 + 16 * count, len(data) - 15), 16):
        offset = int.from_bytes(data[entry + 12 : entry + 16], "little")
        frame = data[offset : offset + 24]
        if len(frame) < 24:
            continue  # Pillow reports the broken file itself
        if frame.startswith(b"\x89PNG\r\n\x1a\n"):
            width, height = struct.unpack(">II", frame[16:24])
        else:  # BITMAPINFOHEADER: signed sizes, the height counts the AND mask too
            width, height = (abs(v) for v in struct.unpack("<ii", frame[4:12]))
            height //= 2
        if width * height > limits.max_pixels:
            raise ImageError(
                f"{label}: image too large (icon frame {width}x{height} = {width * height}"
                f" pixels > {limits.max_pixels})"
            )


def _decode(source: Image.Image, limits: ImageLimits, label: str) -> Image.Image:
    im = source
    if im.tell() != 0:
        im.seek(0)  # animations and multi-page files: the first frame
    _check_size(im, limits, label)  # from the header, before a byte of pixels is decoded
    im.load()  # everything now: a truncated file fails here, not in the model
    _check_size(im, limits, label)  # ICO, ICNS and friends only learn their size on load
    im = _apply_orientation(im)
    rgb = _to_rgb(im)
    out = rgb.copy() if rgb is source else rgb  # never the caller's object or a file-backed one
    # upright RGB pixels, nothing more: metadata kept from the file (its EXIF orientation
    # above all) would make a second load_image of this result rotate it again
    out.info = {}
    return out


_TRANSPOSE = {  # the table of ImageOps.exif_transpose
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _apply_orientation(im: Image.Image) -> Image.Image:
    """ImageOps.exif_transpose without its metadata rewrite, which can fail on corrupt EXIF
    that has nothing to do with the (already decoded) pixels; unreadable EXIF means upright."""
    try:
        orientation = im.getexif().get(0x0112, 1)
        method = _TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
    except Exception:
        method = None
    return im if method is None else im.transpose(method)


_HIGH_DEPTH = {"I", "F"}  # plus every "I;16..." / "I;32..." raw mode


def _to_rgb(im: Image.Image) -> Image.Image:
    mode = im.mode
    if mode in _HIGH_DEPTH or mode.startswith("I;"):
        return _scale_to_8bit(im).convert("RGB")
    if mode == "La":
        im = im.convert("LA")
    elif mode == "RGBa":
        im = im.convert("RGBA")
    elif mode == "P":
        has_alpha = "transparency" in im.info or (im.palette and im.palette.mode == "RGBA")
        im = im.convert("RGBA" if has_alpha else "RGB")
    elif mode == "PA" or (mode in ("1", "L", "RGB") and "transparency" in im.info):
        im = im.convert("RGBA")  # the latter: a PNG tRNS colour key
    if im.mode in ("RGBA", "LA"):
        return _on_white(im)
    return im if im.mode == "RGB" else im.convert("RGB")  # 1, L, CMYK, YCbCr, LAB, HSV, RGBX


def _on_white(im: Image.Image) -> Image.Image:
    """Transparent areas become white: a VLM sees what a browser would show on a page."""
    background = Image.new("RGB", im.size, (255, 255, 255))
    background.paste(im.convert("RGB"), mask=im.getchannel("A"))
    return background


def _scale_to_8bit(im: Image.Image) -> Image.Image:
    """Stretch high bit-depth data over 0..255 by its range instead of clipping at 255.

    A 16-bit scan or a float map rarely uses the type's full range, so its min..max is what
    makes it visible. Non-finite floats are left out of the range (NaN ends up black).
    """
    im = im if im.mode == "F" else im.convert("F")
    lo, hi = im.getextrema()
    if not (math.isfinite(lo) and math.isfinite(hi)):  # slow path, only for odd float files
        values = memoryview(im.tobytes()).cast("f")
        lo = min(filter(math.isfinite, values), default=0.0)
        hi = max(filter(math.isfinite, values), default=0.0)
    if hi <= lo:
        return Image.new("L", im.size, 0 if hi <= 0 else 255)
    scale = 255.0 / (hi - lo)
    return im.point(lambda v: v * scale - lo * scale).convert("L")


# ---- for engines ----------------------------------------------------------------------------


def fit_pixels(im: Image.Image, max_pixels: int) -> Image.Image:
    """Downscale, keeping the aspect ratio, so width x height <= max_pixels.

    The image token budget of a VLM grows with the pixels it is given (LLaVA-OneVision picks
    more 729-token tiles, Qwen2.5-VL more 28x28 patches), so this is the one knob that bounds
    the cost of an image for every engine.
    """
    w, h = im.size
    if w * h <= max_pixels:
        return im
    scale = (max_pixels / (w * h)) ** 0.5
    size = (max(1, int(w * scale)), max(1, int(h * scale)))
    return im.resize(size, Image.Resampling.BICUBIC)


# ---- naming inputs --------------------------------------------------------------------------


def expand_paths(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Folders become their image files (recursive, sorted, hidden ones skipped); anything
    else is passed through as given, so a missing or odd file gets its own error record.

    Nothing is opened here: whether a file is an image is load_image's call. A folder is
    streamed (``walk_images``), so a tree of a billion files is never one list in memory.
    """
    for p in paths:
        path = Path(p)
        if not os.path.isdir(path):  # unlike Path.is_dir, never raises (EACCES, NUL byte)
            yield path
            continue
        yield from walk_images(path)


def walk_images(top: Path) -> Iterator[Path]:
    """The image files under ``top`` in ``sorted()`` order of their paths, one folder listing
    held at a time per level. Paths compare part by part, so sorting each folder's entries by
    name and going into a subfolder where its name falls is the same order as sorting every
    path (``a/x.png`` comes before ``a-b.png``, as ``"a" < "a-b.png"``). What is walked is
    what ``os.walk`` walks: hidden files and folders are skipped, a link to a folder is not
    followed, and a folder that cannot be listed gives nothing."""
    stack = [iter(_listing(top))]
    while stack:
        entry = next(stack[-1], None)
        if entry is None:
            stack.pop()
        elif entry[1]:
            stack.append(iter(_listing(entry[0])))
        else:
            yield entry[0]


def _listing(folder: Path) -> list[tuple[Path, bool]]:
    """(path, is a folder to walk into) for the visible subfolders and image files of
    ``folder``, sorted by name; an unlistable folder is empty, as in ``os.walk``."""
    out: list[tuple[str, bool]] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                try:
                    is_dir = entry.is_dir()
                except OSError:
                    is_dir = False
                if is_dir:
                    if not os.path.islink(entry.path):  # os.walk's own test
                        out.append((entry.name, True))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                    out.append((entry.name, False))
    except OSError:
        return []
    return [(folder / name, is_dir) for name, is_dir in sorted(out)]


def source_id(source: ImageSource, index: int) -> str:
    """The id a record carries: the path as given, else bytes-N / image-N (or the filename
    a PIL image was opened from). Never raises, so an odd input still gets its record."""
    if isinstance(source, bytes | bytearray | memoryview):
        return f"bytes-{index}"
    own = _own_name(source)
    if own is not None:
        return own
    return f"image-{index}" if isinstance(source, Image.Image) else f"input-{index}"
