"""Test set-up: never touch the network; find the reference facts beside the checkout."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = Path(os.environ.get("LLAVAGUARD_REFERENCE", ROOT.parent / "shared" / "reference"))


@pytest.fixture(scope="session")
def reference() -> Path:
    if not (REFERENCE / "llavaguard-v1.2-policy.txt").is_file():
        pytest.fail(f"reference facts not found at {REFERENCE}; set LLAVAGUARD_REFERENCE")
    return REFERENCE


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300, **kw):
    """Run the real ``llavaguard`` command in a subprocess."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "llavaguard", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        **kw,
    )


# CI runs the same hypothesis examples every time; local runs explore new ones.
from hypothesis import settings as _hyp  # noqa: E402

_hyp.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    _hyp.load_profile("ci")
