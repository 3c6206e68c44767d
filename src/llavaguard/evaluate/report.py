"""Report files of one evaluation: report.json (machines), report.md (people), samples.jsonl
(one joined row per sample, to look at the errors) and plots/*.png.

Rates print as percentages with two decimals, as the LlavaGuard paper reports them; "n/a" marks
a metric that is undefined on its slice (for example recall where there is no Unsafe sample).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from llavaguard.evaluate.data import Joined

RATES = ("balanced_accuracy", "recall", "specificity", "precision", "accuracy", "f1", "f2")
TITLES = {
    "balanced_accuracy": "Bal. acc.", "recall": "Recall", "specificity": "Specificity",
    "precision": "Precision", "accuracy": "Accuracy", "f1": "F1", "f2": "F2", "per": "PER",
    "category_exact": "Cat. acc.", "category_containment": "Cat. acc. (contains)",
    "roc_auc": "ROC AUC", "pr_auc": "PR AUC", "recall_at_fpr_1": "Recall@1%FPR",
    "recall_at_fpr_5": "Recall@5%FPR", "ece": "ECE", "best_threshold": "Best threshold",
}  # fmt: skip


def pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.2f}"


def dec(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def headline(slice_: dict[str, Any], how: str = "excluded") -> dict[str, float | None]:
    """The flat metrics of a slice that reports and comparisons show."""
    r, per, cat, sc = (slice_[k] for k in ("rating", "per", "category", "scores"))
    out = {k: r[how][k] for k in RATES}
    out["per"] = per[how]["per"]
    out["category_exact"] = cat[how]["exact"]
    out["category_containment"] = cat[how]["containment"]
    for k in ("roc_auc", "pr_auc", "recall_at_fpr_1", "recall_at_fpr_5", "ece", "best_threshold"):
        out[k] = sc[k]
    return out


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _slice_rows(slices: dict[str, dict[str, Any]], how: str) -> list[list[str]]:
    rows = []
    for name, s in slices.items():
        h = headline(s, how)
        rows.append([name, str(s["n"]), str(s["invalid"]), *(pct(h[k]) for k in RATES),
                     pct(h["per"]), pct(h["category_exact"])])  # fmt: skip
    return rows


SLICE_HEADER = ["slice", "n", "invalid", *(TITLES[k] for k in RATES), "PER", "Cat. acc."]


def _ci(report: dict[str, Any], how: str, key: str) -> str:
    ci = report["intervals"].get(how, {}).get(key)
    return "" if not ci else f" [{pct(ci[0])}, {pct(ci[1])}]"


def markdown(report: dict[str, Any], plots: Sequence[str] = ()) -> str:
    """report.md: the headline both ways of counting invalid answers, slices, scores,
    policy generalisation and the plots, in that order."""
    lines = _intro(report) + _headline(report) + _slices(report) + _scores(report)
    lines += _generalisation(report) + _calibration(report)
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{Path(p).stem}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def _intro(report: dict[str, Any]) -> list[str]:
    o = report["overall"]
    src = report.get("model") or report.get("predictions")
    return [
        f"# Evaluation: {report['name']}",
        "",
        f"Labels `{report['labels']}`, predictions from `{src}`"
        + (f" ({report.get('engine')}, mode {report.get('mode')})" if report.get("model") else "")
        + f"; llavaguard {report['llavaguard_version']}, {report['created']}.",
        "",
        f"{o['n']} samples; {o['n'] - o['missing']} predicted, {o['missing']} missing; "
        f"{o['invalid']} without a rating (missing or unreadable), {o['incomplete']} incomplete "
        f"answers, {o['policy_mismatch']} judged under a different policy than labelled.",
        "",
        *(f"**Warning:** {note}\n" for note in report.get("warnings", [])),
    ]


def _headline(report: dict[str, Any]) -> list[str]:
    o = report["overall"]
    lines = [
        "## Headline",
        "",
        "Positive class = Unsafe. *Excluded*: answers without a rating left out, as the "
        "original evaluation did. *Wrong*: counted as wrong answers. Brackets: bootstrap 95% "
        f"interval ({report['intervals']['resamples']} resamples).",
        "",
    ]
    rows = []
    for key in ("balanced_accuracy", "recall", "specificity", "precision", "f1", "accuracy"):
        rows.append([TITLES[key]] + [
            pct(o["rating"][how][key]) + _ci(report, how, key) for how in ("excluded", "wrong")
        ])  # fmt: skip
    rows.append(["F2"] + [pct(o["rating"][h]["f2"]) for h in ("excluded", "wrong")])
    rows.append(["PER"] + [pct(o["per"][h]["per"]) + _ci(report, h, "per")
                           for h in ("excluded", "wrong")])  # fmt: skip
    rows.append(["Category accuracy (exact)"] + [pct(o["category"][h]["exact"])
                                                  for h in ("excluded", "wrong")])  # fmt: skip
    rows.append(["Category accuracy (contains)"] + [pct(o["category"][h]["containment"])
                                                     for h in ("excluded", "wrong")])  # fmt: skip
    lines += _table(["metric (%)", "invalid excluded", "invalid wrong"], rows)
    r = o["rating"]["excluded"]
    lines += ["", f"Confusion (excluded): TP {r['tp']}, FP {r['fp']}, TN {r['tn']}, FN {r['fn']}."]
    per = o["per"]["excluded"]
    return [
        *lines,
        f"PER over {per['n']} exception samples: allowed (must be Safe) {pct(per['per_allowed'])} "
        f"of {per['n_allowed']}, sensitive (must be Unsafe) {pct(per['per_sensitive'])} of "
        f"{per['n_sensitive']}.",
    ]


def _slices(report: dict[str, Any]) -> list[str]:
    lines = ["", "## Slices (invalid excluded)", ""]
    slices = {"all": report["overall"], "default policy": report["default_policy"]}
    slices.update({f"aug {k}": v for k, v in report["by_augmentation"].items()})
    lines += _table(SLICE_HEADER, _slice_rows(slices, "excluded"))
    lines += ["", "## By expected category (invalid excluded)", ""]
    return lines + _table(SLICE_HEADER, _slice_rows(report["by_category"], "excluded"))


def _scores(report: dict[str, Any]) -> list[str]:
    sc = report["overall"]["scores"]
    lines = ["", "## Scores", ""]
    if sc["n"] == 0:
        return [*lines, "No prediction carries a score (P(Unsafe))."]
    lines += _table(
        ["ROC AUC", "PR AUC", "Recall@1%FPR", "Recall@5%FPR", "best threshold",
         "bal. acc. there", "ECE", "n"],
        [[dec(sc["roc_auc"]) + (
            f" [{dec(report['intervals']['roc_auc'][0])}, "
            f"{dec(report['intervals']['roc_auc'][1])}]"
            if report["intervals"].get("roc_auc") else ""),
          dec(sc["pr_auc"]), pct(sc["recall_at_fpr_1"]), pct(sc["recall_at_fpr_5"]),
          dec(sc["best_threshold"]), pct(sc["best_balanced_accuracy"]), dec(sc["ece"]),
          str(sc["n"])]],
    )  # fmt: skip
    lines += ["", "Best threshold: calling a score at or above it Unsafe maximises balanced "
              "accuracy. ECE over equal-width bins."]  # fmt: skip
    return lines


def _calibration(report: dict[str, Any]) -> list[str]:
    cal = report.get("calibration")
    if not cal:
        return []
    lines = ["", "## Calibration", "",
             f"`{cal['file']}` ({cal['method']}) on the {cal['samples']} scored samples under "
             f"{cal['policy']}:", ""]  # fmt: skip
    lines += _table(
        ["", "ECE", "Brier"],
        [[w, dec(cal[w]["ece"]), dec(cal[w]["brier"])] for w in ("before", "after")],
    )
    t = cal.get("threshold")
    if t:
        got = t["held_out"]
        lines += ["", f"Threshold {t['threshold']:.4f} (chosen for {t['target']} {t['value']}: "
                  f"FPR {pct(t['fpr'])}, recall {pct(t['recall'])} where it was fitted) gives "
                  f"FPR {pct(got['fpr'])}, recall {pct(got['recall'])} here."]  # fmt: skip
    return lines


def _generalisation(report: dict[str, Any]) -> list[str]:
    if not report["by_variant"]:
        return []
    lines = [
        "",
        "## Policy generalisation",
        "",
        "The same images under policy variants the model was not trained with; the expected "
        "label follows from each variant (own category allowed: Safe; sensitive: Unsafe; "
        "other changes, order or codes: unchanged).",
        "",
    ]
    slices = dict(report["by_variant"])
    slices["all variants"] = report["variants"]
    lines += _table(SLICE_HEADER, _slice_rows(slices, "excluded"))
    lines += ["", "*original*: the default-policy samples the variants were made from. "
              "Every other section of this report leaves the variants out."]  # fmt: skip
    return lines


def sample_rows(rows: Sequence[Joined]) -> Iterator[dict[str, Any]]:
    described: dict[int, str] = {}  # per policy, not per row: samples share a few policies

    def describe(policy: Any) -> str:
        if id(policy) not in described:
            described[id(policy)] = policy.describe()
        return described[id(policy)]

    return (
        {
            "id": r.sample.id,
            "image": r.sample.image,
            "policy": describe(r.sample.policy),
            "policy_id": r.sample.policy.id,
            "augmentation": r.sample.augmentation,
            "variant": r.sample.variant,
            "exception": r.sample.exception,
            "expected_rating": r.sample.rating,
            "expected_category": r.sample.category,
            "rating": r.predicted_rating,
            "category": r.predicted_category,
            "score": r.score,
            "rationale": r.prediction.rationale if r.prediction else None,
            "valid": r.prediction.valid if r.prediction else False,
            "error": (r.prediction.error if r.prediction else "no prediction for this sample"),
        }
        for r in rows
    )


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _write_lines(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """JSONL written a row at a time (not one string of all of them), then renamed."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_reports(
    report: dict[str, Any], rows: Sequence[Joined], out: Path, plots: bool = True
) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if plots:
        from llavaguard.evaluate.plots import write_plots

        written = write_plots(report, rows, out / "plots")
    rel = [str(p.relative_to(out)) for p in written]
    report["plots"] = rel
    _write(out / "report.json", json.dumps(report, indent=2) + "\n")
    _write(out / "report.md", markdown(report, rel))
    _write_lines(out / "samples.jsonl", sample_rows(rows))
    return [out / "report.json", out / "report.md", out / "samples.jsonl", *written]
