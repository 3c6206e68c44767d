"""Check by hand what the test suite leaves out for time: annotation on a two-node loopback
Ray cluster with a pool of two real vLLM servers (``--engine vllm``, ``--ray-base-url`` twice).
Every input must get a P(Unsafe), and both servers must have served requests.

    .venv/bin/python scripts/check_ray_vllm_pool.py      # about 3 minutes once the vLLM venv exists

It makes the vLLM venv with scripts/vllm_env.sh if there is none (as the tests do).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from llavaguard.testing import build_tiny_model, make_sample_images, write_shards
from llavaguard.testing.ray import free_port, start_cluster
from llavaguard.testing.vllm import start_vllm

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    env = subprocess.run(["bash", str(ROOT / "scripts" / "vllm_env.sh")], capture_output=True,
                         text=True, check=True)  # fmt: skip
    python = env.stdout.strip().splitlines()[-1]
    tmp = Path(tempfile.mkdtemp(prefix="pool-"))
    model = build_tiny_model(tmp / "ov", "llava-onevision")
    write_shards(tmp / "wds", make_sample_images(tmp / "img", 12, seed=3), per_shard=3)
    servers = [start_vllm(python, model, free_port()) for _ in range(2)]
    cluster = start_cluster(nodes=2, cpus=1)
    try:
        cmd = [sys.executable, "-m", "llavaguard", "annotate", "run", str(tmp / "wds"), "-o",
               str(tmp / "out"), "--model", str(model), "--engine", "vllm", "--base-url",
               servers[0].url, "--mode", "triage", "-b", "2", "--backend", "ray",
               "--ray-address", cluster.address, "--ray-actors", "2",
               *[a for s in servers for a in ("--ray-base-url", s.url)]]  # fmt: skip
        started = time.perf_counter()
        res = subprocess.run(cmd, env=cluster.env, capture_output=True, text=True, timeout=900)
        print(f"exit {res.returncode} in {time.perf_counter() - started:.1f} s")
        print(res.stderr[-1000:])
        rows = pq.read_table(tmp / "out").to_pylist()
        scored = sum(r["score"] is not None for r in rows)
        served = [s.output(5000).count("POST /v1/chat/completions") for s in servers]
        print(f"{len(rows)} rows, {scored} with P(Unsafe); requests per server: {served}")
        return 0 if res.returncode == 0 and scored == len(rows) == 12 and all(served) else 1
    finally:
        cluster.stop()
        for s in servers:
            s.stop()


if __name__ == "__main__":
    sys.exit(main())
