"""Policy size against time: building, declaring states, rendering and reading an answer,
for policies of 1,000 / 10,000 / 100,000 categories, and loading them from YAML and JSON files.

Rendering was quadratic (each category's state looked the category up by scanning the list):
4,000 categories took 3.3 s and 100,000 did not finish in 28 minutes. Every step here should
now grow linearly with the number of categories.

    .venv/bin/python bench/bench_policy.py                    # about 2 minutes on 2 cores
    .venv/bin/python bench/bench_policy.py --sizes 1000 10000 --no-yaml

Writes bench/results/policy.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import run_record

ROOT = Path(__file__).resolve().parents[1]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def categories(n: int) -> list[dict[str, Any]]:
    return [
        {"code": f"C{i}", "name": f"Category {i}",
         "should_not": [f"Show thing {i}."], "can": [f"Discuss thing {i}."]}
        for i in range(n)
    ]  # fmt: skip


def run(n: int, with_yaml: bool) -> dict[str, Any]:
    from llavaguard.policy import Policy, parse_answer

    data = {"name": f"bench-{n}", "categories": categories(n)}
    build_s, policy = timed(lambda: Policy.from_data(data))
    codes = [f"C{i}" for i in range(0, n, 10)]
    states_s, policy = timed(lambda: policy.with_states(allow=codes, sensitive=["C1"]))
    render_s, text = timed(lambda: policy.text)
    id_s, _ = timed(lambda: policy.id)
    answer = json.dumps(
        {"rating": "Unsafe", "category": policy.labels[-2], "rationale": "It shows it."}
    )
    parse_s, parsed = timed(lambda: parse_answer(answer, policy))
    assert parsed.valid, parsed.error
    row = {
        "categories": n,
        "build_s": round(build_s, 4),
        "with_states_s": round(states_s, 4),
        "states_declared": len(codes) + 1,
        "render_s": round(render_s, 4),
        "id_s": round(id_s, 4),
        "parse_answer_s": round(parse_s, 4),
        "prompt_chars": len(text),
    }
    if with_yaml:
        import yaml

        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "policy.yaml"
            f.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
            row["yaml_bytes"] = f.stat().st_size
            row["yaml_load_s"] = round(timed(lambda: Policy.load(f))[0], 4)
            j = Path(tmp) / "policy.json"
            j.write_text(json.dumps(data), encoding="utf-8")
            row["json_load_s"] = round(timed(lambda: Policy.load(j))[0], 4)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--no-yaml", action="store_true", help="skip loading from YAML/JSON files")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "policy.json")
    args = ap.parse_args()
    rows = []
    for n in args.sizes:
        rows.append(run(n, not args.no_yaml))
        print(json.dumps(rows[-1]), flush=True)
    doc = {
        **run_record(),
        "runs": rows,
    }
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(args.out)


if __name__ == "__main__":
    main()
