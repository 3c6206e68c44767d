"""Test set-up: never touch the network; the reference facts kept in tests/reference/; tiny
models built once per run and shared by every test that only reads them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
# Facts about the released models, kept in the repository (see tests/reference/README.md) ...
IN_REPO_REFERENCE = ROOT / "tests" / "reference"
# ... and the team's reference notes they were copied from, when a checkout has them beside it
# (tests/test_reference.py cross-checks the two).
SHARED_REFERENCE = Path(
    os.environ.get("LLAVAGUARD_REFERENCE", ROOT.parent / "shared" / "reference")
)


@pytest.fixture(scope="session")
def reference() -> Path:
    if not (IN_REPO_REFERENCE / "llavaguard-v1.2-policy.txt").is_file():
        pytest.fail(f"reference facts not found at {IN_REPO_REFERENCE}")
    return IN_REPO_REFERENCE


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
