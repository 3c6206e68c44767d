"""Side-by-side comparison of evaluation runs (their report.json files)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llavaguard.errors import ConfigError
from llavaguard.evaluate.report import TITLES, dec, headline, pct

COLUMNS = ("balanced_accuracy", "recall", "specificity", "precision", "f1", "per",
           "category_exact", "roc_auc", "ece")  # fmt: skip
DECIMAL = {"roc_auc", "pr_auc", "ece", "best_threshold"}


def load_run(path: str | Path) -> dict[str, Any]:
    """A run is its report.json, or the folder that holds it."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    try:
        report = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no report.json (run 'llavaguard evaluate run' first)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"{p}: not a readable report ({e})") from e
    if not isinstance(report, dict) or "overall" not in report:
        raise ConfigError(f"{p}: not an llavaguard evaluation report")
    return report


def comparison(
    paths: Sequence[str | Path], slice_: str = "overall", how: str = "excluded"
) -> dict[str, Any]:
    """Headline metrics of each run on one slice (overall, default_policy, variants, or a
    category / augmentation / variant name), plus which runs share the same labels."""
    runs = []
    for path in paths:
        report = load_run(path)
        s = _slice(report, slice_)
        runs.append({
            "run": report.get("name") or str(path),
            "path": str(path),
            "source": report.get("model") or report.get("predictions"),
            "labels": report.get("labels"),
            "n": None if s is None else s["n"],
            "invalid": None if s is None else s["invalid"],
            "metrics": None if s is None else headline(s, how),
        })  # fmt: skip
    return {"slice": slice_, "invalid_as": how, "runs": runs}


def _slice(report: dict[str, Any], name: str) -> dict[str, Any] | None:
    if name in ("overall", "default_policy", "variants"):
        return report.get(name)
    for group in ("by_category", "by_augmentation", "by_variant"):
        if name in report.get(group, {}):
            return report[group][name]
    return None


def markdown(comp: dict[str, Any], columns: Sequence[str] = COLUMNS) -> str:
    header = ["run", "n", "invalid", *(TITLES[c] for c in columns)]
    lines = [
        f"Slice `{comp['slice']}`, invalid answers {comp['invalid_as']}; rates in %.",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    for r in comp["runs"]:
        m = r["metrics"] or {}
        cells = [(dec if c in DECIMAL else pct)(m.get(c)) for c in columns]
        lines.append(f"| {r['run']} | {r['n'] if r['n'] is not None else 'n/a'} | "
                     f"{r['invalid'] if r['invalid'] is not None else 'n/a'} | "
                     + " | ".join(cells) + " |")  # fmt: skip
    if len({r["labels"] for r in comp["runs"]}) > 1:
        lines += ["", "Note: these runs were scored on different labelled sets."]
    return "\n".join(lines) + "\n"
