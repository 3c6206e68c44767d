"""Render bench/results/*.json as the Markdown tables in docs/benchmarks.md.

.venv/bin/python bench/report.py > /tmp/tables.md
"""

from __future__ import annotations

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def speed_table(doc: dict) -> str:
    base = doc["results"].get("recipe-fp32", {}).get("seconds_per_image")
    base16 = doc["results"].get("recipe-bf16", {}).get("seconds_per_image")
    lines = [
        f"`{doc['command']}` ({doc['date']}, {doc['machine']['cores']} cores; "
        f"{doc['model']}; images {', '.join(doc['images'])}; {doc['tokens']} new tokens)",
        "",
        "| configuration | s / image | vs recipe fp32 | vs recipe bf16 | new tokens / image "
        "| peak RSS (MB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in doc["results"].items():
        if "seconds_per_image" not in r:
            lines.append(f"| {name} | failed: {r.get('error')} | | | | |")
            continue
        s = r["seconds_per_image"]
        tokens = sum(r["generated_tokens"]) / len(r["generated_tokens"])
        lines.append(
            f"| {name} | {s:.2f} | {base / s:.1f}x | {base16 / s:.1f}x | {tokens:.0f} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    d = doc.get("bf16_vs_fp32_triage") or {}
    if d:
        lines += [
            "",
            f"bfloat16 against float32, triage on the same {d['images']} images: largest "
            f"|ΔP(Unsafe)| {d['max_abs_score_diff']:.4f}, mean {d['mean_abs_score_diff']:.4f}, "
            f"{d['rating_flips']} rating flips, {d['category_changes']} category changes.",
        ]
    return "\n".join(lines)


def policy_table(doc: dict) -> str:
    m = doc["machine"]
    lines = [
        f"`{doc['command']}` ({doc['date']}, {m['cores']} cores, {m['cpu']} with "
        f"{', '.join(m['cpu_flags']) or 'no listed flags'}; Python {m['python']})",
        "",
        "| categories | build (s) | declare states (s) | render (s) | id (s) | read an answer (s) "
        "| prompt (chars) | load YAML (s) | load JSON (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in doc["runs"]:
        lines.append(
            f"| {r['categories']:,} | {r['build_s']:.3f} | {r['with_states_s']:.3f} "
            f"| {r['render_s']:.3f} | {r['id_s']:.3f} | {r['parse_answer_s']:.3f} "
            f"| {r['prompt_chars']:,} | {r.get('yaml_load_s', float('nan')):.2f} "
            f"| {r.get('json_load_s', float('nan')):.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    for path in sorted(RESULTS.glob("speed-*.json")):
        print(f"### {path.name}\n")
        print(speed_table(json.loads(path.read_text())))
        print()
    if (RESULTS / "policy.json").exists():
        print("### policy.json\n")
        print(policy_table(json.loads((RESULTS / "policy.json").read_text())))
