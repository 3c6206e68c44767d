"""Write docs/cli.md from the commands' own --help, so the reference never drifts.

Run: .venv/bin/python scripts/gen_cli_docs.py   (tests/test_docs.py checks it is current)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

COMMANDS = [
    [],
    ["assess"],
    ["policy"],
    ["policy", "list"],
    ["policy", "show"],
    ["models"],
    ["annotate", "run"],
    ["annotate", "report"],
    ["annotate", "export"],
    ["dataset", "import"],
    ["dataset", "rationales"],
    ["dataset", "build"],
    ["train"],
    ["evaluate", "run"],
    ["evaluate", "compare"],
    ["evaluate", "variants"],
    ["serve"],
    ["demo"],
    ["testing"],
    ["testing", "tiny-model"],
    ["testing", "sample-images"],
    ["testing", "synthetic"],
]
OUT = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def help_text(args: list[str]) -> str:
    env = {**os.environ, "COLUMNS": "100", "NO_COLOR": "1", "TERM": "dumb"}
    out = subprocess.run(
        [sys.executable, "-m", "llavaguard", *args, "--help"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    return "\n".join(line.rstrip() for line in out.stdout.strip().splitlines())


def render() -> str:
    parts = [
        "# CLI reference\n",
        "Generated from `--help` by `scripts/gen_cli_docs.py`; examples are in the README.\n",
    ]
    for args in COMMANDS:
        parts.append(f"## `{' '.join(['llavaguard', *args])}`\n")
        parts.append(f"```text\n{help_text(args)}\n```\n")
    return "\n".join(parts)


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")
