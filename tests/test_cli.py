"""The command line: start-up cost, help, and errors that are one line.

The first two tests start real processes (what a fresh interpreter imports, and the exit code
of the installed entry point); the rest call the same ``main`` in this process."""

import subprocess
import sys
import time

from conftest import cli, run_cli

HEAVY = ("torch", "transformers", "torchvision", "PIL", "datasets", "matplotlib")


def test_help_and_policy_commands_do_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from llavaguard.cli import main\n"
        "for args in (['--help'], ['assess', '--help'], ['policy', 'show'], ['policy', 'list'],"
        " ['models'], ['testing', '--help'], ['dataset', 'build', '--help']):\n"
        "    main(args)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_help_lists_commands():
    out = run_cli("--help")
    assert out.returncode == 0
    for cmd in ("assess", "policy", "models", "testing"):
        assert cmd in out.stdout


def test_models_lists_default():
    out = cli("models")
    assert "AIML-TUDA/LlavaGuard-v1.2-0.5B-OV-hf (default)" in out.stdout


def test_bad_options_exit_2_with_one_line(tmp_path):
    for args in (
        ["assess", str(tmp_path), "--format", "xml"],
        ["assess", str(tmp_path), "--policy", "nope"],
        ["assess", str(tmp_path), "--allow", "O3", "--sensitive", "O3"],
        ["assess", str(tmp_path), "--top-p", "0.5"],
        ["assess", str(tmp_path), "--engine", "nope", "--model", str(tmp_path)],
    ):
        out = cli(*args)
        assert out.returncode == 2, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, (args, out.stderr)
        assert out.stderr.startswith("error:"), (args, out.stderr)


def test_the_ray_bar_counts_units_rows_and_images_per_second():
    from types import SimpleNamespace

    from llavaguard.cli.common import unit_progress

    progress, on_start, on_unit = unit_progress(quiet=False)
    on_start(4)
    time.sleep(0.05)
    on_unit(SimpleNamespace(rows=30))
    on_unit(SimpleNamespace(rows=55))
    progress.stop()
    [task] = progress.tasks
    assert (task.completed, task.total) == (2, 4)  # so the bar has a time left to show
    assert task.fields["rows"].startswith("55 rows, ") and task.fields["rows"].endswith(" images/s")
    quiet, on_start, on_unit = unit_progress(quiet=True)
    on_start(4)
    on_unit(SimpleNamespace(rows=1))
    assert quiet.tasks == []
