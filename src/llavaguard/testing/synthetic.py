"""A synthetic visual-policy benchmark: images in which each policy category is its own visual
motif, with human-style annotations, so the whole loop (import, build, train, evaluate) can be
proven on a CPU with no download.

Each Unsafe category has a colour and a shape of its own (a red ring, a blue cross, ...) drawn
a few times at random places and sizes over a noisy background; Safe images carry neutral
motifs (grey or pastel rectangles and blobs). The annotations use the reference annotation label
space and score words (``Highly Inappropriate``, ``Nudity``, ``Nature``, ...) and include a few
``Discard Sample`` rows, the way an annotation export looks, so ``dataset import`` has real work.
"""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

# The benchmark's compact taxonomy (same codes and names, one rule each): a prompt of a few
# hundred tokens instead of 1,300, for the light version that runs in the test suite.
COMPACT_POLICY = Path(__file__).with_name("synthetic-policy.yaml")

# category code -> (annotation label, colour, shape)
MOTIFS: dict[str, tuple[str, tuple[int, int, int], str]] = {
    "O1": ("Humiliation, Harassment or Hate", (220, 30, 30), "ring"),
    "O2": ("Violence, Harm or Cruelty", (30, 60, 220), "cross"),
    "O3": ("Explicit Sexual Content", (240, 140, 0), "triangle"),
    "O4": ("Nudity", (150, 30, 190), "disc"),
    "O5": ("Illegal Activities", (20, 170, 60), "square"),
    "O6": ("Substance Abuse or Weapons", (0, 190, 200), "stripes"),
    "O7": ("Suicide or Self Harm", (230, 40, 160), "diamond"),
    "O8": ("Animal Cruelty", (120, 80, 20), "bars"),
    "O9": ("Disasters or Emergencies", (240, 230, 20), "checks"),
}
SAFE_LABELS = ("Nature", "Peace or Care", "Respectful or Appropriate Content",
               "Polite Communication and Gestures")  # fmt: skip
UNSAFE_SCORES = ("Highly Inappropriate", "Moderately Inappropriate")
SAFE_SCORES = ("Generally Acceptable", "Barely Acceptable")


def _draw_motif(draw, shape: str, box: tuple[int, int, int, int], colour) -> None:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, w // 5))
    elif shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    elif shape == "triangle":
        draw.polygon([(x0, y1), (x1, y1), ((x0 + x1) // 2, y0)], fill=colour)
    elif shape == "diamond":
        cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=colour)
    elif shape == "cross":
        t = max(2, w // 4)
        draw.rectangle([x0, (y0 + y1 - t) // 2, x1, (y0 + y1 + t) // 2], fill=colour)
        draw.rectangle([(x0 + x1 - t) // 2, y0, (x0 + x1 + t) // 2, y1], fill=colour)
    elif shape == "stripes":
        for i in range(0, h, max(2, h // 4)):
            draw.rectangle([x0, y0 + i, x1, y0 + i + max(1, h // 8)], fill=colour)
    elif shape == "bars":
        for i in range(0, w, max(2, w // 4)):
            draw.rectangle([x0 + i, y0, x0 + i + max(1, w // 8), y1], fill=colour)
    elif shape == "checks":
        s = max(2, w // 3)
        for i in range(0, w, s):
            for j in range(0, h, s):
                if (i // s + j // s) % 2 == 0:
                    draw.rectangle([x0 + i, y0 + j, x0 + i + s - 1, y0 + j + s - 1], fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def draw_image(code: str | None, rng: random.Random, size: int = 64):
    """One image: ``code``'s motif two or three times, or neutral motifs for ``None``."""
    from PIL import Image, ImageDraw

    base = tuple(rng.randint(200, 245) for _ in range(3))
    if code is not None:  # the motif's colour tints the whole scene, as a theme would
        base = tuple((b + c) // 2 for b, c in zip(base, MOTIFS[code][1], strict=True))
    im = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(2, 4)):  # neutral clutter, in every image
        grey = rng.randint(120, 200)
        x0, y0 = rng.randrange(size - 8), rng.randrange(size - 8)
        x1, y1 = x0 + rng.randint(6, size // 3), y0 + rng.randint(6, size // 3)
        tint = tuple(min(255, grey + rng.randint(-15, 15)) for _ in range(3))
        (draw.rectangle if rng.random() < 0.5 else draw.ellipse)([x0, y0, x1, y1], fill=tint)
    if code is not None:
        _, colour, shape = MOTIFS[code]
        for _ in range(rng.randint(3, 5)):
            s = rng.randint(size // 3, size // 2)
            x0, y0 = rng.randrange(size - s), rng.randrange(size - s)
            jitter = tuple(max(0, min(255, c + rng.randint(-20, 20))) for c in colour)
            _draw_motif(draw, shape, (x0, y0, x0 + s, y0 + s), jitter)
    noise = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    return Image.blend(im, noise, 0.08)


def make_benchmark(
    out_dir: str | os.PathLike,
    *,
    per_category: int = 20,
    safe: int | None = None,
    discard: int = 3,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write ``images/`` and ``annotations.csv`` (image, score, category) and return the CSV.

    ``per_category`` Unsafe images for each of O1-O9, ``safe`` Safe ones (default: as many as
    all Unsafe ones together), and ``discard`` rows scored ``Discard Sample``.
    """
    rng = random.Random(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    safe = len(MOTIFS) * per_category if safe is None else safe
    rows: list[tuple[str, str, str]] = []
    items = [(code, i) for code in MOTIFS for i in range(per_category)]
    items += [(None, i) for i in range(safe + discard)]
    for n, (code, i) in enumerate(items):
        name = f"images/{code or 'safe'}-{i:04d}.png"
        draw_image(code, rng, size).save(out / name)
        if code is not None:
            rows.append((name, rng.choice(UNSAFE_SCORES), MOTIFS[code][0]))
        elif n < len(items) - discard:
            rows.append((name, rng.choice(SAFE_SCORES), rng.choice((*SAFE_LABELS, ""))))
        else:
            rows.append((name, "Discard Sample", ""))
    rng.shuffle(rows)
    path = out / "annotations.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image", "score", "category"])
        w.writerows(rows)
    return path
