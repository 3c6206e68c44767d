"""PNG plots of one evaluation: confusion matrix, per-category accuracy, ROC and PR curves,
reliability diagram. Score plots are skipped when no prediction has a score."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from llavaguard.evaluate.data import Joined
from llavaguard.evaluate.metrics import POSITIVE, finite


def write_plots(report: dict[str, Any], rows: Sequence[Joined], out: Path) -> list[Path]:
    """Write every plot the report has data for; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, draw in PLOTS.items():
        fig = draw(plt, report, rows)
        if fig is None:
            continue
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(out / name)
    return written


def _confusion(plt: Any, report: dict[str, Any], rows: Sequence[Joined]) -> Any:
    """The confusion matrix, with a third column for answers without a rating."""
    r = report["overall"]["rating"]["excluded"]
    inv = {"Safe": 0, "Unsafe": 0}
    for j in rows:
        if j.predicted_rating is None:
            inv[j.sample.rating] += 1
    grid = [[r["tn"], r["fp"], inv["Safe"]], [r["fn"], r["tp"], inv["Unsafe"]]]
    fig, ax = plt.subplots(figsize=(4.6, 3.4))
    ax.imshow(grid, cmap="Blues")
    ax.set_xticks(range(3), ["Safe", "Unsafe", "no rating"])
    ax.set_yticks(range(2), ["Safe", "Unsafe"])
    ax.set_xlabel("predicted")
    ax.set_ylabel("expected")
    top = max(max(row) for row in grid) or 1
    for i, row in enumerate(grid):
        for k, v in enumerate(row):
            ax.text(k, i, str(v), ha="center", va="center",
                    color="white" if v > top / 2 else "black")  # fmt: skip
    ax.set_title("Confusion matrix")
    return fig


def _categories(plt: Any, report: dict[str, Any], rows: Sequence[Joined]) -> Any:
    """Per expected category: the share of right ratings, and of right categories."""
    cats = report["by_category"]
    if not cats:
        return None
    names = list(cats)
    rating_acc = [cats[n]["rating"]["excluded"]["accuracy"] or 0.0 for n in names]
    cat_acc = [cats[n]["category"]["excluded"]["exact"] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.9))
    ys = range(len(names))
    ax.barh([y + 0.2 for y in ys], rating_acc, height=0.4, label="rating right")
    ax.barh([y - 0.2 for y in ys], cat_acc, height=0.4, label="category right")
    ax.set_yticks(list(ys), [f"{n} ({cats[n]['n']})" for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of samples (invalid excluded)")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8)
    ax.set_title("By expected category")
    return fig


def _scored(rows: Sequence[Joined]) -> tuple[list[bool], list[float]] | None:
    """(is Unsafe, P(Unsafe)) of the scored samples, when both ratings are among them."""
    y = [j.sample.rating == POSITIVE for j in rows if finite(j.score)]
    s = [j.score for j in rows if finite(j.score)]
    return (y, s) if s and 0 < sum(y) < len(y) else None


def _roc(plt: Any, report: dict[str, Any], rows: Sequence[Joined]) -> Any:
    if (scored := _scored(rows)) is None:
        return None
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(*scored)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(fpr, tpr, label=f"AUC {report['overall']['scores']['roc_auc']:.3f}")
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("recall (true positive rate)")
    ax.legend(loc="lower right")
    ax.set_title("ROC, P(Unsafe)")
    return fig


def _pr(plt: Any, report: dict[str, Any], rows: Sequence[Joined]) -> Any:
    if (scored := _scored(rows)) is None:
        return None
    from sklearn.metrics import precision_recall_curve

    y, _ = scored
    prec, rec, _ = precision_recall_curve(*scored)
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.plot(rec, prec, label=f"AP {report['overall']['scores']['pr_auc']:.3f}")
    ax.axhline(sum(y) / len(y), ls="--", c="grey", lw=0.8)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left")
    ax.set_title("Precision-recall, P(Unsafe)")
    return fig


def _reliability(plt: Any, report: dict[str, Any], rows: Sequence[Joined]) -> Any:
    bins = report["reliability"]
    if not bins:
        return None
    fig, ax = plt.subplots(figsize=(4, 4))
    ax.bar([(lo + hi) / 2 for lo, hi, *_ in bins], [b[3] for b in bins],
           width=[hi - lo for lo, hi, *_ in bins], edgecolor="black", alpha=0.6,
           label="share Unsafe")  # fmt: skip
    ax.plot([b[2] for b in bins], [b[3] for b in bins], "o", c="C1", label="bin mean score")
    _reliability_frame(
        ax, "P(Unsafe)", f"Reliability (ECE {report['overall']['scores']['ece']:.3f})"
    )
    return fig


def _reliability_frame(ax: Any, xlabel: str, title: str) -> None:
    """The unit square of a reliability diagram: the diagonal, axes, legend and title."""
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("share of Unsafe samples")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(title)


def _calibrated(plt: Any, report: dict[str, Any], rows: Sequence[Joined]) -> Any:
    """Reliability before and after ``--calibration``, on the samples under its policy."""
    cal = report.get("calibration")
    if not cal:
        return None
    fig, ax = plt.subplots(figsize=(4, 4))
    for when, marker in (("before", "o--"), ("after", "s-")):
        bins = cal["reliability"][when]
        ax.plot([b[2] for b in bins], [b[3] for b in bins], marker,
                label=f"{when} (ECE {cal[when]['ece']:.3f})")  # fmt: skip
    _reliability_frame(ax, "P(Unsafe), bin mean",
                       f"Calibration: {cal['method']}, {cal['samples']} samples")  # fmt: skip
    return fig


# file name -> the function that draws it (None: no data for it), in the order written
PLOTS: dict[str, Callable[[Any, dict[str, Any], Sequence[Joined]], Any]] = {
    "confusion.png": _confusion,
    "categories.png": _categories,
    "roc.png": _roc,
    "pr.png": _pr,
    "reliability.png": _reliability,
    "calibration.png": _calibrated,
}
