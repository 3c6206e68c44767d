"""The docs stay true: the CLI reference matches --help, and README commands exist."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current():
    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts" / "gen_cli_docs.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    current = (ROOT / "docs" / "cli.md").read_text("utf-8")
    assert current == gen.render(), "docs/cli.md is stale: run scripts/gen_cli_docs.py"


def test_readme_setup_and_test_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text("utf-8")
    ci = (ROOT / ".ci" / "run").read_text("utf-8")
    for command in (
        'python3 -m venv .venv && .venv/bin/pip install -e ".[dev]"',
        ".venv/bin/ruff check . && .venv/bin/python -m pytest",
    ):
        assert command in readme and command in ci
