"""What every benchmark result records about its run: the command that made it, when, and the
machine (cores, Python, and the CPU features that change the figures: one machine had
AVX512-BF16, another only AVX2, so results are compared as ratios within one run)."""

from __future__ import annotations

import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

# The CPU features that matter to this project's engines (bf16 matmuls) and to comparing runs.
FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "neon", "asimd")


def cpu_flags() -> list[str]:
    """The FLAGS this CPU has, as /proc/cpuinfo lists them (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    except OSError:
        return []
    words = set(text.replace(":", " ").split())
    return [f for f in FLAGS if f in words]


def run_record() -> dict[str, Any]:
    """The command, date and machine of this run, to open a result's JSON with."""
    return {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "cpu_flags": cpu_flags(),
            "python": platform.python_version(),
        },
    }
