"""PNG plots of one evaluation: confusion matrix, per-category accuracy, ROC and PR curves,
reliability diagram. Score plots are skipped when no prediction has a score."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llavaguard.evaluate.data import Joined
from llavaguard.evaluate.metrics import POSITIVE, finite


def write_plots(report: dict[str, Any], rows: Sequence[Joined], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: Any, name: str) -> None:
        path = out / name
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    # confusion matrix, with a third column for answers without a rating
    o = report["overall"]
    r = o["rating"]["excluded"]
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
    save(fig, "confusion.png")

    # per expected category: share of right ratings, and of right categories
    cats = report["by_category"]
    if cats:
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
        save(fig, "categories.png")

    y = [j.sample.rating == POSITIVE for j in rows if finite(j.score)]
    s = [j.score for j in rows if finite(j.score)]
    if s and 0 < sum(y) < len(y):
        from sklearn.metrics import precision_recall_curve, roc_curve

        fpr, tpr, _ = roc_curve(y, s)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(fpr, tpr, label=f"AUC {o['scores']['roc_auc']:.3f}")
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("recall (true positive rate)")
        ax.legend(loc="lower right")
        ax.set_title("ROC, P(Unsafe)")
        save(fig, "roc.png")

        prec, rec, _ = precision_recall_curve(y, s)
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot(rec, prec, label=f"AP {o['scores']['pr_auc']:.3f}")
        ax.axhline(sum(y) / len(y), ls="--", c="grey", lw=0.8)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower left")
        ax.set_title("Precision-recall, P(Unsafe)")
        save(fig, "pr.png")

    if report["reliability"]:
        bins = report["reliability"]
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.bar([(lo + hi) / 2 for lo, hi, *_ in bins], [b[3] for b in bins],
               width=[hi - lo for lo, hi, *_ in bins], edgecolor="black", alpha=0.6,
               label="share Unsafe")  # fmt: skip
        ax.plot([b[2] for b in bins], [b[3] for b in bins], "o", c="C1", label="bin mean score")
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("P(Unsafe)")
        ax.set_ylabel("share of Unsafe samples")
        ax.legend(loc="upper left", fontsize=8)
        ax.set_title(f"Reliability (ECE {o['scores']['ece']:.3f})")
        save(fig, "reliability.png")
    return written
