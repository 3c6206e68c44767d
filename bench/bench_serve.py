"""Throughput and latency of `llavaguard serve` with 1 and 16 concurrent clients.

A real server in a subprocess on a loopback port; clients post real photos to /v1/assess
(base64 JSON) from threads, each sending its next request when the last one is answered.
Per mode and client count: images/s over the wall time, p50/p99 latency, and the server's own
batch sizes (from /metrics). The speed-up is images/s at 16 clients over 1 client.

    .venv/bin/python bench/bench_serve.py --size tiny                   # about two minutes
    .venv/bin/python bench/bench_serve.py --size 0.5b --modes triage \\
        --image-max-pixels 147456 --requests 8 32                       # real architecture

Writes bench/results/serve-<size>.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_speed import model_dir, photo_paths
from common import run_record

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model: Path, mode: str, args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cmd = [sys.executable, "-m", "llavaguard", "serve", "--model", str(model), "--port",
           str(port), "--mode", mode, "--max-batch-size", str(args.max_batch_size),
           "--max-wait-ms", str(args.max_wait_ms), "--max-new-tokens", str(args.tokens),
           "--max-queue", "256", "--timeout", str(args.timeout)]  # fmt: skip
    if args.image_max_pixels:
        cmd += ["--image-max-pixels", str(args.image_max_pixels)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("server did not start")


def batch_stats(url: str) -> tuple[float, float]:
    text = httpx.get(url + "/metrics").text
    values = {}
    for line in text.splitlines():
        if line.startswith(("llavaguard_batch_size_count ", "llavaguard_batch_size_sum ")):
            name, value = line.split()
            values[name] = float(value)
    return values.get("llavaguard_batch_size_count", 0), values.get("llavaguard_batch_size_sum", 0)


def load(url: str, bodies: list[dict], clients: int, requests: int) -> dict:
    latencies: list[float] = []
    errors = 0

    def one(i: int) -> None:
        nonlocal errors
        t = time.perf_counter()
        r = httpx.post(url + "/v1/assess", json=bodies[i % len(bodies)], timeout=3600)
        latencies.append(time.perf_counter() - t)
        errors += r.status_code != 200

    n0, s0 = batch_stats(url)
    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    n1, s1 = batch_stats(url)
    lat = sorted(latencies)
    return {
        "clients": clients,
        "requests": requests,
        "errors": errors,
        "wall_seconds": wall,
        "images_per_second": requests / wall,
        "p50_seconds": statistics.median(lat),
        "p99_seconds": lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))],
        "mean_batch_size": (s1 - s0) / (n1 - n0) if n1 > n0 else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "0.5b"], default="tiny")
    ap.add_argument("--modes", nargs="+", default=["triage", "full"])
    ap.add_argument("--clients", type=int, nargs=2, default=[1, 16], metavar=("FEW", "MANY"))
    ap.add_argument("--requests", type=int, nargs=2, default=[16, 64],
                    help="requests sent with FEW and with MANY clients")  # fmt: skip
    ap.add_argument("--tokens", type=int, default=64, help="max new tokens (full mode)")
    ap.add_argument("--max-batch-size", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=10, help="the server's default")
    ap.add_argument("--image-max-pixels", type=int)
    ap.add_argument("--timeout", type=float, default=3600, help="server request timeout (s)")
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    model = model_dir(args.size)
    photos = photo_paths(args.images)
    bodies = [{"image": base64.b64encode(Path(p).read_bytes()).decode()} for p in photos]
    results: dict[str, dict] = {}
    for mode in args.modes:
        proc, url = start(model, mode, args)
        try:
            httpx.post(url + "/v1/assess", json=bodies[0], timeout=3600)  # warm-up
            runs = [
                load(url, bodies, c, r) for c, r in zip(args.clients, args.requests, strict=True)
            ]
        finally:
            proc.terminate()
            proc.wait(30)
        few, many = runs
        results[mode] = {
            "runs": runs,
            "speedup": many["images_per_second"] / few["images_per_second"],
        }
        print(f"{mode}: " + "; ".join(
            f"{r['clients']} clients {r['images_per_second']:.2f} img/s p50 {r['p50_seconds']:.2f}s"
            f" p99 {r['p99_seconds']:.2f}s batch {r['mean_batch_size'] or 0:.1f}" for r in runs)
            + f"; speed-up {results[mode]['speedup']:.2f}x", flush=True)  # fmt: skip
    doc = {
        **run_record(),
        "model": f"llava-onevision {args.size} (random weights)",
        "images": [Path(p).name for p in photos],
        "settings": {
            "max_batch_size": args.max_batch_size,
            "max_wait_ms": args.max_wait_ms,
            "max_new_tokens": args.tokens,
            "image_max_pixels": args.image_max_pixels,
        },
        "results": results,
    }
    out = args.out or ROOT / "bench" / "results" / f"serve-{args.size}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(out)


if __name__ == "__main__":
    main()
