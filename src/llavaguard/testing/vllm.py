"""A real vLLM server for the tests and benchmarks: started, awaited, stopped, killed.

vLLM runs from its own virtual environment (``scripts/vllm_env.sh`` makes it: its CPU build
pins a torch and a transformers that the project's environment does not share), so it is
always a subprocess here, on a loopback port, as a user runs it beside llavaguard.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO


def vllm_command(
    python: str | os.PathLike,
    model: str | os.PathLike,
    port: int,
    *,
    memory: float = 0.12,
    extra: Sequence[str] = (),
) -> list[str]:
    """The server's command line: float32 as the tests compare with the local engine, eager
    (no graph capture on a CPU), one image a prompt, room for the longest policy prompt."""
    return [
        str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--enforce-eager",
        "--gpu-memory-utilization", str(memory), "--max-model-len", "8192",
        "--max-logprobs", "20", "--limit-mm-per-prompt", json.dumps({"image": 1}), *extra,
    ]  # fmt: skip


@dataclass
class VLLMServer:
    """A running vLLM server process and where it answers."""

    proc: subprocess.Popen
    port: int
    log: IO[str]
    tmp: str  # where its IPC sockets go (VLLM_RPC_BASE_PATH), removed with it

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def output(self, lines: int = 20) -> str:
        self.log.seek(0)
        return "".join(self.log.readlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM to the API server alone (it shuts its engine down; a signal to the whole
        group makes the engine die first and log errors), then the group if it lingers."""
        if self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        self.kill()

    def kill(self) -> None:
        """SIGKILL to every process of the server: a crash, as far as clients can tell."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_vllm(
    python: str | os.PathLike,
    model: str | os.PathLike,
    port: int,
    *,
    memory: float = 0.12,
    extra: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout: float = 600.0,
) -> VLLMServer:
    """Start a server and return once ``/health`` answers; RuntimeError with the end of its
    log if it exits or is not ready in ``timeout`` seconds."""
    log = tempfile.TemporaryFile("w+")  # noqa: SIM115 (the server's; closed with it)
    # vLLM leaves its ZMQ sockets in /tmp when it is killed: a folder of the server's own
    # keeps them and goes with the server (TMPDIR stays: compile caches live under it)
    tmp = tempfile.mkdtemp(prefix="lgvllm-")
    env = {**os.environ, "VLLM_LOGGING_LEVEL": "WARNING", "PYTHONPATH": "",
           "VLLM_RPC_BASE_PATH": tmp, **(env or {})}  # fmt: skip
    proc = subprocess.Popen(
        vllm_command(python, model, port, memory=memory, extra=extra),
        stdout=log, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    server = VLLMServer(proc, port, log, tmp)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vLLM exited ({proc.returncode}):\n{server.output()}")
        if healthy(port):
            return server
        time.sleep(1.0)
    server.kill()
    raise RuntimeError(f"vLLM not ready in {timeout:.0f} s:\n{server.output()}")


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False
