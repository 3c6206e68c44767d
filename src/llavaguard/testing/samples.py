"""Sample images of several formats, sizes and modes, drawn here, for trying the pipeline."""

from __future__ import annotations

import os
import random
from pathlib import Path

# (format, extension, mode) in turn, so a handful of images covers the common cases.
_KINDS = [
    ("JPEG", ".jpg", "RGB"),
    ("PNG", ".png", "RGBA"),
    ("WEBP", ".webp", "RGB"),
    ("GIF", ".gif", "P"),
    ("BMP", ".bmp", "RGB"),
    ("TIFF", ".tiff", "L"),
    ("PNG", ".png", "P"),
    ("JPEG", ".jpg", "CMYK"),
]


def make_sample_images(out_dir: str | os.PathLike, n: int = 6, *, seed: int = 0) -> list[Path]:
    """Write ``n`` images (64 to 640 px, non-square, mixed modes) and return their paths."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        fmt, ext, mode = _KINDS[i % len(_KINDS)]
        w, h = rng.randint(64, 640), rng.randint(64, 640)
        top, bottom = [tuple(rng.randrange(256) for _ in range(3)) for _ in range(2)]
        im = Image.linear_gradient("L").resize((w, h))
        im = Image.merge("RGB", [im.point(lambda v, a=a, b=b: a + (b - a) * v // 255)
                                 for a, b in zip(top, bottom, strict=True)])  # fmt: skip
        draw = ImageDraw.Draw(im)
        for _ in range(rng.randint(3, 8)):
            x0, y0 = rng.randrange(w), rng.randrange(h)
            x1, y1 = x0 + rng.randint(8, w // 2 + 8), y0 + rng.randint(8, h // 2 + 8)
            colour = tuple(rng.randrange(256) for _ in range(3))
            shape = rng.choice([draw.ellipse, draw.rectangle])
            shape([x0, y0, x1, y1], fill=colour, outline=(0, 0, 0))
        noise = Image.frombytes("L", (w, h), rng.randbytes(w * h)).convert("RGB")
        im = Image.blend(im, noise, 0.15)
        if mode == "RGBA":
            im = im.convert("RGBA")
            im.putalpha(Image.linear_gradient("L").resize((w, h)))
        elif mode == "P":
            im = im.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        elif mode != "RGB":
            im = im.convert(mode)
        path = out / f"sample-{i:03d}{ext}"
        im.save(path, format=fmt)
        paths.append(path)
    return paths


def write_shards(
    out_dir: str | os.PathLike, files: list[Path | tuple[str, bytes]], per_shard: int
) -> list[Path]:
    """WebDataset tar shards of ``files`` (paths, or (member name, bytes)), ``per_shard`` a
    tar, each image with its ``.json`` beside it as img2dataset writes them: 000000.tar,
    000001.tar... Keys run on across shards (``000000007.jpg``)."""
    import io
    import json
    import tarfile

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for s in range(0, len(files), per_shard):
        path = out / f"{s // per_shard:06d}.tar"
        with tarfile.open(path, "w") as tar:
            for n, f in enumerate(files[s : s + per_shard], s):
                name, data = (f.name, f.read_bytes()) if isinstance(f, Path) else f
                key = f"{n:09d}"
                meta = json.dumps({"key": key, "source": name}).encode()
                for member, body in ((key + Path(name).suffix, data), (key + ".json", meta)):
                    info = tarfile.TarInfo(member)
                    info.size = len(body)
                    tar.addfile(info, io.BytesIO(body))
        shards.append(path)
    return shards
