"""Cost of --multi-label against triage: P(violates c) for the nine v1.2 categories.

Triage prefills one prompt (image + policy) and scores the rating. ``--multi-label`` adds
nine prompts (the policy with only c in force, for each c) that share the image and the
policy text up to where they part: the local engine prefills the shared start once and walks
the rest as a prefix tree on one KV cache. Goal: at most 2.5x triage's time on the 0.5B
architecture. Both run in one process on one loaded model, image by image alternately, so
the ratio compares like with like on this machine.

    .venv/bin/python bench/bench_multilabel.py --size 0.5b --images 3
    .venv/bin/python bench/bench_multilabel.py --size tiny --images 3     # seconds

Writes bench/results/multilabel-<size>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from bench_speed import ONE_TILE, model_dir, photo_paths
from common import run_record

ROOT = Path(__file__).resolve().parents[1]


def _timed(guard, image) -> tuple[float, object]:
    start = time.perf_counter()
    a = guard.assess(image)
    return time.perf_counter() - start, a


def measure(engine, images: list[str], pixels: int | None, repeats: int) -> dict:
    """Seconds per image for triage and for triage with --multi-label, alternating."""
    from llavaguard import Guard

    triage = Guard(engine, mode="triage", image_max_pixels=pixels)
    multi = Guard(engine, mode="triage", multi_label=True, image_max_pixels=pixels)
    _timed(triage, images[0]), _timed(multi, images[0])  # warm-up
    plain, labelled, tokens, ratios = [], [], [], []
    for _ in range(repeats):
        for path in images:
            t1, _a = _timed(triage, path)
            t2, a = _timed(multi, path)
            plain.append(t1)
            labelled.append(t2)
            ratios.append(t2 / t1)
            tokens.append(engine.shared_tokens)
    return {
        "image_max_pixels": pixels,
        "triage_s": statistics.mean(plain),
        "multi_label_s": statistics.mean(labelled),
        "ratio": statistics.mean(labelled) / statistics.mean(plain),
        "ratio_per_image": ratios,
        "shared_prefill_tokens": [t[0] for t in tokens],
        "tree_tokens": [t[1] for t in tokens],
        "categories": len(a.violations or {}),
    }


def alone(engine, image: str, pixels: int | None) -> dict:
    """The same ten prompts each prefilled on its own (what sharing saves), one image."""
    from PIL import Image

    from llavaguard import Policy
    from llavaguard.engines import VisionRequest
    from llavaguard.guard.scoring import RATINGS
    from llavaguard.inputs.images import fit_pixels
    from llavaguard.policy import answer_prefix

    policy = Policy.load()
    img = Image.open(image).convert("RGB")
    img = fit_pixels(img, pixels) if pixels else img
    texts = [policy.text] + [policy.only(c).text for c in policy.in_force()]
    start = time.perf_counter()
    for text in texts:
        engine.score([VisionRequest(text=text, images=(img,), prefix=answer_prefix())], RATINGS)
    return {"image": Path(image).name, "prompts": len(texts),
            "seconds": time.perf_counter() - start}  # fmt: skip


def main() -> None:
    from llavaguard.engines.transformers import TransformersEngine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=["tiny", "0.5b"], default="tiny")
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--dtype", default="auto")
    args = ap.parse_args()
    images = photo_paths(args.images)
    started = time.perf_counter()
    engine = TransformersEngine.load(str(model_dir(args.size)), {"dtype": args.dtype})
    load_s = time.perf_counter() - started
    runs = {"full-resolution": measure(engine, images, None, args.repeats),
            "one-tile": measure(engine, images, ONE_TILE, args.repeats)}  # fmt: skip
    each = {"full-resolution": alone(engine, images[0], None),
            "one-tile": alone(engine, images[0], ONE_TILE)}  # fmt: skip
    result = {**run_record(), "size": args.size,
              "dtype": str(engine.dtype).removeprefix("torch."), "load_s": load_s,
              "goal_ratio": 2.5, "runs": runs, "each_prompt_alone": each}  # fmt: skip
    out = ROOT / "bench" / "results" / f"multilabel-{args.size}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    for name, r in runs.items():
        print(f"{name}: triage {r['triage_s']:.2f}s, multi-label {r['multi_label_s']:.2f}s, "
              f"ratio {r['ratio']:.2f} (goal <= 2.5); ten prompts alone "
              f"{each[name]['seconds']:.2f}s")  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
