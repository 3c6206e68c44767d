"""What an annotation run found: counts, rates, throughput, cache hits; Markdown and plots."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from llavaguard.annotate.store import ResultStore
from llavaguard.errors import ConfigError


def summarize(root: Path) -> dict[str, Any]:
    store = ResultStore(root)
    manifest = store.describe()  # without a usable manifest: what the shards say
    if manifest is None:
        raise ConfigError(f"{root}: not an annotation results folder (no manifest, no shards)")
    table = store.rows(["rating", "category", "valid", "error", "cached", "score"])
    ratings = table.column("rating").to_pylist()
    categories = table.column("category").to_pylist()
    valid = table.column("valid").to_pylist()
    errors = table.column("error").to_pylist()
    cached = table.column("cached").to_pylist()
    scores = [s for s in table.column("score").to_pylist() if s is not None]
    n = len(ratings)
    rated = [r for r in ratings if r is not None]
    runs = manifest.get("runs", [])
    seconds = sum(r.get("seconds", 0) for r in runs)
    new_rows = sum(r.get("rows", 0) for r in runs)
    return {
        "folder": str(root),
        "identity": manifest.get("identity", {}),
        "policy": manifest.get("params", {}).get("policy"),
        "rows": n,
        "ratings": dict(Counter(r or "none" for r in ratings)),
        "categories": dict(Counter(c or "none" for c in categories).most_common()),
        "unsafe_categories": dict(
            Counter(c for r, c in zip(ratings, categories, strict=True) if r == "Unsafe")
        ),
        "unsafe_rate": (sum(r == "Unsafe" for r in rated) / len(rated)) if rated else None,
        "invalid": sum(1 for v, r in zip(valid, ratings, strict=True) if r is not None and not v),
        "errors": sum(1 for e, r in zip(errors, ratings, strict=True) if e and r is None),
        "cache_hits": sum(bool(c) for c in cached),
        "scores": scores,
        "runs": len(runs),
        "seconds": seconds,
        "rows_per_second": new_rows / seconds if seconds else None,
        # a Ray run's work units that failed every try: their inputs have no rows yet
        "units_failed": runs[-1].get("units_failed", []) if runs else [],
    }


def _failed_unit(u: dict) -> str:
    return (f"Work unit `{u['unit']}` ({u['path']}) failed {u['attempts']} tries in the last "
            f"run and has no rows: {u['reason']}; the next run tries it again.\n")  # fmt: skip


def write_report(root: Path, out: Path | None = None, thumbnails: int = 0) -> Path:
    """report.md, report.json and plots/ in ``out`` (default: ``_report`` in the results
    folder, a name Parquet readers skip)."""
    out = Path(out or Path(root) / "_report")
    out.mkdir(parents=True, exist_ok=True)
    s = summarize(root)
    plots = _plots(root, s, out / "plots", thumbnails)
    pct = f"{100 * s['unsafe_rate']:.2f}%" if s["unsafe_rate"] is not None else "n/a"
    rate = f"{s['rows_per_second']:.2f}" if s["rows_per_second"] else "n/a"
    ident = s["identity"]
    lines = [
        f"# Annotation report: {root}",
        "",
        f"Model `{ident.get('model')}` ({ident.get('engine')}, mode {ident.get('mode')}), "
        f"policy {s['policy']} (id {str(ident.get('policy_id'))[:12]}).",
        "",
        f"{s['rows']} rows; unsafe rate {pct} of rated rows; {s['errors']} errors (no answer), "
        f"{s['invalid']} incomplete answers; {s['cache_hits']} answered from the dedup cache; "
        f"{s['runs']} runs, {s['seconds']:.1f} s, {rate} rows/s.",
        "",
        *map(_failed_unit, s["units_failed"]),
        "| rating | rows |",
        "|---|---:|",
        *(f"| {k} | {v} |" for k, v in sorted(s["ratings"].items())),
        "",
        "| category (all rows) | rows | of them Unsafe |",
        "|---|---:|---:|",
        *(
            f"| {k} | {v} | {s['unsafe_categories'].get(k, 0)} |"
            for k, v in s["categories"].items()
        ),
    ]
    if plots:
        lines += ["", *(f"![{p.stem}]({p.relative_to(out)})" for p in plots)]
    (out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    doc = {k: v for k, v in s.items() if k != "scores"}
    (out / "report.json").write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return out / "report.md"


def _plots(root: Path, s: dict[str, Any], out: Path, thumbnails: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written = []
    cats = s["categories"]
    if cats:
        fig, ax = plt.subplots(figsize=(7, 0.4 * len(cats) + 1.2))
        names = list(cats)
        ax.barh(names, [cats[n] for n in names], label="all")
        ax.barh(names, [s["unsafe_categories"].get(n, 0) for n in names], label="Unsafe")
        ax.invert_yaxis()
        ax.set_xlabel("rows")
        ax.legend(fontsize=8)
        ax.set_title("Categories")
        fig.tight_layout()
        fig.savefig(out / "categories.png", dpi=110)
        plt.close(fig)
        written.append(out / "categories.png")
    if s["scores"]:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.hist(s["scores"], bins=20, range=(0, 1))
        ax.set_xlabel("P(Unsafe)")
        ax.set_ylabel("rows")
        ax.set_title("Score histogram")
        fig.tight_layout()
        fig.savefig(out / "scores.png", dpi=110)
        plt.close(fig)
        written.append(out / "scores.png")
    if thumbnails:
        grid = _flagged_grid(root, thumbnails, out / "flagged.png")
        if grid is not None:
            written.append(grid)
    return written


def _flagged_grid(root: Path, n: int, path: Path) -> Path | None:
    """The ``n`` highest-scored Unsafe rows as a contact sheet (images read back by key)."""
    from PIL import Image, ImageDraw

    from llavaguard.annotate.export import read_image_bytes
    from llavaguard.inputs.images import load_image

    table = ResultStore(root).rows(["key", "rating", "score", "category"])
    rows = [r for r in table.to_pylist() if r["rating"] == "Unsafe"]
    rows.sort(key=lambda r: -(r["score"] or 0))
    tiles = []
    for r in rows[:n]:
        try:
            im = load_image(read_image_bytes(r["key"]))
        except Exception:
            continue
        im.thumbnail((160, 160))
        tile = Image.new("RGB", (160, 180), "white")
        tile.paste(im, ((160 - im.width) // 2, (160 - im.height) // 2))
        label = f"{(r['category'] or '')[:18]} {r['score']:.2f}" if r["score"] else ""
        ImageDraw.Draw(tile).text((4, 164), label, fill="black")
        tiles.append(tile)
    if not tiles:
        return None
    cols = min(6, len(tiles))
    sheet = Image.new("RGB", (160 * cols, 180 * ((len(tiles) + cols - 1) // cols)), "white")
    for i, t in enumerate(tiles):
        sheet.paste(t, (160 * (i % cols), 180 * (i // cols)))
    sheet.save(path)
    return path
