"""Test set-up: never touch the network; the reference facts kept in tests/reference/; tiny
models built once per run and shared by every test that only reads them."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# OpenMP threads that sleep while they wait, in this process and every process a test starts
# (CLI runs, servers, Ray nodes, vLLM; read once when torch loads). By default torch's threads
# spin between operations; on a busy machine (two cores shared with a server, a CLI run or
# other work) the spinning thread takes the core its partner needs, and the same tests took 3
# to 10 times as long (test_scores.py 205 s against 25 s; a light demo's training step took
# 42 minutes). With sleeping threads they run as fast as with one thread there, and the thread
# count, and so every number a model computes, stays the machine's (two threads on an idle
# machine). setdefault: a run that sets it keeps its own choice.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# the test Ray cluster's token (testing.ray), set before anything imports Ray, which reads it
# once: the tests that drive the cluster from this process need it
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)

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


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Callable[..., Path]:
    """``tiny_models(family, seed=0)``: the folder of a tiny random model of ``family``, built
    by ``build_tiny_model`` the first time a test asks for it and shared for the rest of the
    run. Tests load it the way users load any model folder; none may write into it."""
    built: dict[tuple[str, int], Path] = {}

    def get(family: str = "llava-onevision", seed: int = 0) -> Path:
        if (family, seed) not in built:
            from llavaguard.testing import build_tiny_model

            folder = tmp_path_factory.mktemp(f"tiny-{family}-{seed}") / "model"
            built[family, seed] = build_tiny_model(folder, family, seed=seed)
        return built[family, seed]

    return get


@pytest.fixture(scope="session")
def tiny(tiny_models) -> Path:
    """The default family's tiny model (the annotation tests' model)."""
    return tiny_models("llava-onevision")


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> list[Path]:
    """Six sample photos of assorted formats and sizes (a test file may define its own)."""
    from llavaguard.testing import make_sample_images

    return make_sample_images(tmp_path_factory.mktemp("photos"), 6, seed=3)


def cli(
    *args: str, env: dict[str, str] | None = None, cwd: str | os.PathLike | None = None
) -> subprocess.CompletedProcess:
    """Run ``llavaguard ARGS`` in this process, through the same ``main`` the command runs,
    and return what ``run_cli`` returns: the exit code and what went to stdout and stderr.

    No new interpreter, so no second import of torch and transformers: use it wherever the
    start-up of a real process is not what a test checks. ``env`` only reaches what reads the
    environment when called (libraries read some variables once, at import: use ``run_cli``
    for those)."""
    from llavaguard.cli import main

    out, err = io.StringIO(), io.StringIO()
    saved = {k: os.environ.get(k) for k in env or {}}
    try:
        os.environ.update(env or {})
        with (
            contextlib.chdir(cwd or os.getcwd()),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            try:
                code = main(list(args))
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return subprocess.CompletedProcess(["llavaguard", *args], code, out.getvalue(), err.getvalue())


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300, **kw):
    """Run the real ``llavaguard`` command in a subprocess: for the tests of start-up (what
    it imports, how fast it fails), exit codes and signals of a real process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "llavaguard", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        **kw,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """`llavaguard serve` in a subprocess on a free loopback port, once /health answers. Its
    output goes to a file (``proc.log``), not a pipe: a pipe nobody reads fills up and then
    blocks the server on its next log line."""
    port = free_port()
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        [sys.executable, "-m", "llavaguard", "serve", "--model", str(model), "--port", str(port),
         "--max-new-tokens", "24", *args],
        stdout=log, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "LLAVAGUARD_API_KEYS": ""},
    )  # fmt: skip
    proc.log = log
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(log.read())
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("server did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


# CI runs the same hypothesis examples every time; local runs explore new ones.
from hypothesis import settings as _hyp  # noqa: E402

_hyp.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    _hyp.load_profile("ci")


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The python of a virtual environment with vLLM's CPU build: made on first use by
    scripts/vllm_env.sh (minutes, once; reused after), so the README's test command needs no
    other set-up. Skipped, with pip's reason, only where vLLM cannot be installed."""
    script = ROOT / "scripts" / "vllm_env.sh"
    res = subprocess.run(["nice", "-n", "10", "bash", str(script)], capture_output=True,
                         text=True, timeout=3600)  # fmt: skip
    if res.returncode != 0:
        why = (res.stderr.strip().splitlines() or ["no reason given"])[-1]
        pytest.skip(f"vLLM cannot be installed here: {why}")
    return res.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium for the browser tests (Playwright's own browser download cannot
    work here): installed with apt on first use where it is missing and apt can, as a user
    of a fresh Debian machine would; skipped with the reason where it cannot be."""
    import shutil

    found = shutil.which("chromium")
    if found is None and shutil.which("apt-get") and os.geteuid() == 0:
        res = subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], capture_output=True,
                             text=True, timeout=1800)  # fmt: skip
        found = shutil.which("chromium")
        if found is None:
            why = (res.stderr.strip().splitlines() or ["no reason given"])[-1]
            pytest.skip(f"chromium cannot be installed here: {why}")
    if found is None:
        pytest.skip("no chromium, and apt cannot install it here (not root, or no apt-get)")
    return found
