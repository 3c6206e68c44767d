"""A real vLLM server (its CPU build) with a tiny model, through --engine vllm.

What a user does: start vLLM on a model, point llavaguard at it. The tiny model is saved as
the released checkpoints are, so vLLM loads it as it would load LlavaGuard. Slow tier: the
first run makes vLLM's environment (minutes), and the server takes about half a minute.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import cli, free_port

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tiny) -> Path:
    """The session's tiny llava-onevision model (the server only reads it)."""
    return tiny


@pytest.fixture(scope="module")
def server(vllm_python, model):
    from llavaguard.testing.vllm import start_vllm

    running = start_vllm(vllm_python, model, free_port())
    yield running
    running.stop()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def assess(server, model, photos, out: Path, *extra: str) -> list[dict]:
    res = cli("assess", *map(str, photos[:3]), "--engine", "vllm", "--base-url", server.url,
              "--model", str(model), "-o", str(out), *extra)  # fmt: skip
    assert res.returncode == 0, res.stderr
    return read_jsonl(out)


@pytest.fixture(scope="module")
def triage(server, model, photos, tmp_path_factory) -> list[dict]:
    """The triage records of three photos through vLLM (two tests read them)."""
    out = tmp_path_factory.mktemp("triage") / "t.jsonl"
    return assess(server, model, photos, out, "--mode", "triage")


def test_triage_through_vllm_scores_every_photo(triage):
    from llavaguard.policy import Policy

    labels = Policy.load(None).labels
    records = triage
    assert len(records) == 3
    for r in records:
        assert r["error"] is None and 0.0 <= r["score"] <= 1.0
        assert list(r["category_scores"]) == labels  # ten categories
        assert math.isclose(sum(r["category_scores"].values()), 1.0, abs_tol=1e-6)
        assert r["category"] == max(labels, key=r["category_scores"].__getitem__)


def test_full_answers_through_vllm_are_all_valid(server, model, photos, triage, tmp_path):
    from llavaguard.policy import Policy

    labels = Policy.load(None).labels
    full = assess(server, model, photos, tmp_path / "f.jsonl", "--max-new-tokens", "60")
    for answer, scored in zip(full, triage, strict=True):
        assert answer["error"] is None and answer["valid"], answer
        assert answer["rating"] in ("Safe", "Unsafe") and answer["category"] in labels
        assert isinstance(answer["rationale"], str)
        # the answer names what the scores chose, and the scores are the triage's
        assert (answer["rating"], answer["category"]) == (scored["rating"], scored["category"])
        assert answer["score"] == pytest.approx(scored["score"], abs=1e-6)


def test_scores_through_vllm_match_the_local_engine(server, model, photos):
    """Scores, category scores and --multi-label's violations (ten prompts per image, the
    server's prefix cache sharing the image) agree with the local engine's prefix tree."""
    from llavaguard import Guard

    served = Guard.from_pretrained(str(model), engine="vllm", base_url=server.url,
                                   mode="triage", multi_label=True)  # fmt: skip
    local = Guard.from_pretrained(str(model), dtype="float32", device="cpu", mode="triage",
                                  multi_label=True)  # fmt: skip
    images = list(map(str, photos[:3]))
    for a, b in zip(served.assess(images), local.assess(images), strict=True):
        assert a.score == pytest.approx(b.score, abs=0.02)
        for label, p in a.category_scores.items():
            assert p == pytest.approx(b.category_scores[label], abs=0.02)
        assert set(a.violations) == set(b.violations) == {f"O{i}" for i in range(1, 10)}
        for code, p in a.violations.items():
            assert p == pytest.approx(b.violations[code], abs=0.02), code
    served.close()
    local.close()


def test_evaluate_runs_through_vllm(server, model, photos, tmp_path):
    rows = [{"id": f"p{i}", "image": str(p), "rating": "Unsafe" if i % 2 else "Safe",
             "category": "O2" if i % 2 else "NA"} for i, p in enumerate(photos[:4])]  # fmt: skip
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = cli("evaluate", "run", str(labels), "--engine", "vllm", "--base-url", server.url,
              "--model", str(model), "--max-new-tokens", "40", "-o", str(tmp_path / "out"),
              "--bootstrap", "50")  # fmt: skip
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["engine"] == "vllm" and report["overall"]["n"] == len(rows)
    assert report["overall"]["missing"] == 0
    assert report["overall"]["scores"]["n"] == len(rows)  # every answer scored


def test_a_model_the_server_does_not_serve_is_one_line(server, photos):
    res = cli("assess", str(photos[0]), "--engine", "vllm", "--base-url", server.url,
              "--model", "AIML-TUDA/LlavaGuard-v1.2-0.5B-OV-hf")  # fmt: skip
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.count("\n") == 1 and "not AIML-TUDA/LlavaGuard-v1.2-0.5B-OV-hf" in res.stderr


# A loopback TCP relay, run as its own process: ``python -c RELAY LISTEN_PORT TARGET_PORT``.
RELAY = """
import asyncio, sys

async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()

async def connect(client_reader, client_writer):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", int(sys.argv[2]))
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))

async def main():
    server = await asyncio.start_server(connect, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def start_relay(port: int, target: int) -> subprocess.Popen:
    """A relay process on loopback ``port`` to the server on ``target``, once it listens."""
    relay = subprocess.Popen([sys.executable, "-c", RELAY, str(port), str(target)],
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert relay.stdout.readline().strip() == "ready"
    return relay


def test_annotate_through_vllm_survives_the_server_dying(server, model, tmp_path):
    """Kill -9 the server the run talks to mid-run: the inputs in flight and after get rows
    saying the server could not be reached, the run ends (exit 1) instead of hanging, and the
    same command finishes the job once a server is back on its port.

    The run talks to the module's vLLM through a relay process on a port of its own, and the
    relay is what dies and comes back: to the run that is a server killed with SIGKILL (its
    connections cut mid-reply, its port refused) and one started again, without a second
    vLLM start (a minute) and with the module's server left for the other tests."""
    from llavaguard.testing import make_sample_images

    inputs = tmp_path / "in"
    make_sample_images(inputs, 8, seed=5)
    out, port = tmp_path / "out", free_port()
    command = [sys.executable, "-m", "llavaguard", "annotate", "run", str(inputs), "-o", str(out),
               "--engine", "vllm", "--base-url", f"http://127.0.0.1:{port}/v1", "--model",
               str(model), "--mode", "triage", "-b", "2", "--shard-size", "2",
               "--flush-seconds", "1", "-q"]  # fmt: skip
    relay = start_relay(port, server.port)
    run = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("part-*.parquet")) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert list(out.glob("part-*.parquet")), "no shard in 5 minutes"
        relay.kill()
        _, stderr = run.communicate(timeout=300)
    finally:
        relay.kill()
        relay.wait()
        run.kill()
    import pyarrow.parquet as pq

    rows = pq.read_table(out).to_pylist()
    failed = [r for r in rows if r["rating"] is None]
    assert run.returncode == 1, stderr
    assert failed and all(f"127.0.0.1:{port}" in r["error"] for r in failed), failed[:2]
    assert len({r["id"] for r in rows}) == len(rows)
    again = start_relay(port, server.port)
    try:
        res = cli(*command[3:])
    finally:
        again.kill()
        again.wait()
    assert res.returncode == 0, res.stderr
    rows = pq.read_table(out).to_pylist()
    assert len(rows) == 8 and all(r["rating"] is not None for r in rows)
    assert len({r["id"] for r in rows}) == 8
