"""Turning user inputs (paths, bytes, PIL images) into RGB images a VLM can take, safely.

Every input is checked against size limits before it is decoded (decompression bombs), fully
decoded here (so a truncated file fails on its own record, not inside a model batch), and
normalised: EXIF orientation applied, first frame of animations, every mode to 8-bit RGB with
transparency composited on white. Anything that goes wrong becomes one ImageError line that
names the input. This module knows nothing about models or policies.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

from PIL import Image, ImageOps
from pydantic import BaseModel, ConfigDict, Field

from llavaguard.errors import ImageError

IMAGE_EXTENSIONS = frozenset(
    ext.lower()
    for ext in (
        ".jpg", ".jpeg", ".jfif", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff",
        ".ppm", ".pgm", ".pbm", ".pnm", ".ico", ".tga", ".jp2", ".avif", ".heic",
    )
    if ext in Image.registered_extensions() or ext in {".jpg", ".png"}
)  # fmt: skip

ImageSource = str | os.PathLike | bytes | Image.Image


class ImageLimits(BaseModel):
    """Limits applied before decoding; the defaults admit any real photo."""

    model_config = ConfigDict(frozen=True)

    max_bytes: int = Field(64 * 1024 * 1024, ge=1, description="Largest file or byte string.")
    max_pixels: int = Field(80_000_000, ge=1, description="Largest width x height.")


def _label(source: ImageSource, name: str | None) -> str:
    if name is not None:
        return name
    if isinstance(source, bytes | bytearray):
        return "<bytes>"
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or "<PIL image>"
    return os.fspath(source)


def _reason(e: BaseException) -> str:
    text = " ".join(str(e).split())
    if isinstance(e, Image.UnidentifiedImageError) or "cannot identify image file" in text:
        return "not an image file (or an unsupported format)"
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
    if isinstance(e, OSError) and e.strerror and not text:
        return e.strerror
    return text or e.__class__.__name__


def load_image(
    source: ImageSource, *, limits: ImageLimits | None = None, name: str | None = None
) -> Image.Image:
    """An RGB copy of the input, or ImageError; never any other exception."""
    limits = limits or ImageLimits()
    label = _label(source, name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # corrupt metadata: we judge by decoding
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            if isinstance(source, Image.Image):
                return _normalise(source, limits, label)
            data = _read(source, limits, label)
            with Image.open(io.BytesIO(data)) as im:
                return _normalise(im, limits, label)
    except ImageError:
        raise
    except Exception as e:  # Pillow raises many types for bad files; report them all alike
        raise ImageError(f"{label}: {_reason(e)}") from e


def _read(source: str | os.PathLike | bytes, limits: ImageLimits, label: str) -> bytes:
    if isinstance(source, bytes | bytearray):
        data = bytes(source)
    else:
        path = Path(source)
        if path.is_dir():
            raise ImageError(f"{label}: is a directory")
        size = path.stat().st_size
        if size > limits.max_bytes:
            raise ImageError(f"{label}: file too large ({size} bytes > {limits.max_bytes})")
        data = path.read_bytes()
    if not data:
        raise ImageError(f"{label}: empty file")
    if len(data) > limits.max_bytes:
        raise ImageError(f"{label}: file too large ({len(data)} bytes > {limits.max_bytes})")
    return data


def _normalise(im: Image.Image, limits: ImageLimits, label: str) -> Image.Image:
    width, height = im.size
    if width < 1 or height < 1:
        raise ImageError(f"{label}: empty image ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageError(
            f"{label}: image too large ({width}x{height} > {limits.max_pixels} pixels)"
        )
    if getattr(im, "is_animated", False):
        im.seek(0)
    im.load()  # decode everything now: truncated data fails here
    im = ImageOps.exif_transpose(im) or im
    return _to_rgb(im)


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im.copy()
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode in ("PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    elif im.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        im = _scale_to_8bit(im)
    elif im.mode == "L" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode == "RGBA":
        background = Image.new("RGB", im.size, (255, 255, 255))
        background.paste(im, mask=im.getchannel("A"))
        return background
    return im.convert("RGB")


def _scale_to_8bit(im: Image.Image) -> Image.Image:
    """Stretch high bit-depth data by its range instead of clipping it to 255."""
    im = im.convert("F")
    lo, hi = im.getextrema()
    if hi <= lo:
        return Image.new("L", im.size, 0 if hi <= 0 else 255)
    scale = 255.0 / (hi - lo)
    return im.point(lambda v: (v - lo) * scale).convert("L")


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


def expand_paths(paths: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Folders become their image files (recursive, sorted, hidden ones skipped); other paths
    are passed through as given, so a missing or odd file gets its own error record."""
    for p in paths:
        path = Path(p)
        if not path.is_dir():
            yield path
            continue
        found: list[Path] = []
        for root, dirs, files in os.walk(path):
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # prune hidden folders
            found.extend(
                Path(root) / f
                for f in files
                if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS
            )
        yield from sorted(found)


def source_id(source: ImageSource, index: int) -> str:
    """The id a record carries: the path as given, else bytes-N / image-N."""
    if isinstance(source, bytes | bytearray):
        return f"bytes-{index}"
    if isinstance(source, Image.Image):
        return getattr(source, "filename", "") or f"image-{index}"
    return os.fspath(source)
