"""What a built training set holds, for people: ``summary.md`` (counts per split by rating,
category and augmentation, with the recipe that made them) and ``summary.png`` (samples per
category and per augmentation, stacked by rating). ``summary.json`` holds the same counts for
programs; this module only renders them, it does not count anything the JSON lacks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

_SECTIONS = (("ratings", "rating", "Ratings"), ("categories", "category", "Categories"),
             ("augmentations", "augmentation", "Augmentations"))  # fmt: skip
_COLOURS = {"Safe": "#4c9a6a", "Unsafe": "#c8553d"}


def _table(head: str, names: list[str], splits: dict[str, dict], key: str | None) -> list[str]:
    """Rows ``names``, a column per split and a total; counts from ``split[key]``."""
    lines = [f"| {head} | {' | '.join(splits)} | total |", "|---" * (len(splits) + 2) + "|"]
    for n in names:
        row = [(s[key].get(n, 0) if key else s[n]) for s in splits.values()]
        lines.append(f"| {n} | {' | '.join(map(str, row))} | {sum(row)} |")
    return lines


def render_markdown(summary: dict[str, Any], plot: str | None = "summary.png") -> str:
    """The summary as Markdown: one table per count, a column per split and a total."""
    splits = summary["splits"]
    recipe = ", ".join(summary["recipe"]) or "none"
    balanced = "balanced by oversampling" if summary["balanced"] else "not balanced"
    out = [
        "# Training set summary",
        "",
        f"Built by llavaguard {summary.get('llavaguard_version', '?')} from "
        f"`{summary['labels']}`: recipe {recipe} (per image of the rating "
        f"each augmentation is made of, beside its default-policy sample), seed "
        f"{summary['seed']}, test fraction {summary['test_fraction']}, "
        f"training split {balanced}. Policy `{summary.get('policy', '?')}`; formats "
        f"{', '.join(summary.get('formats', []))}.",
        "",
        *_table("", ["samples", "images"], splits, None),
    ]
    for key, head, title in _SECTIONS:
        names = sorted({n for s in splits.values() for n in s[key]})
        out += ["", f"## {title}", "", *_table(head, names, splits, key)]
    if plot:
        out += ["", f"![samples per category and augmentation, by rating]({plot})"]
    return "\n".join(out) + "\n"


def plot_summary(summary: dict[str, Any], path: Path) -> None:
    """Per split: samples per category and per augmentation, stacked Safe/Unsafe bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    splits = summary["splits"]
    panels = (("by_category", "category"), ("by_augmentation", "augmentation"))
    tall = max(len(s[key]) for s in splits.values() for key, _ in panels) or 1
    fig, axes = plt.subplots(len(splits), 2, figsize=(11, (0.32 * tall + 1.3) * len(splits) + 0.4),
                             squeeze=False, layout="constrained")  # fmt: skip
    for row, (split, counts) in enumerate(splits.items()):
        for col, (key, what) in enumerate(panels):
            ax = axes[row][col]
            names = sorted(counts[key])
            left = [0] * len(names)
            for rating, colour in _COLOURS.items():
                widths = [counts[key][n].get(rating, 0) for n in names]
                ax.barh(names, widths, left=left, color=colour, label=rating)
                left = [a + b for a, b in zip(left, widths, strict=True)]
            ax.invert_yaxis()
            ax.set_title(f"{split}: samples per {what}")
            ax.set_xlabel("samples")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if not names:
                ax.text(0.5, 0.5, "no samples", ha="center", va="center", transform=ax.transAxes)
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="outside upper right", ncols=2)
    fig.savefig(path, dpi=100)
    plt.close(fig)
