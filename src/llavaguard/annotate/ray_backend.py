"""The annotation pipeline on Ray Data: items -> map_batches with engine actors (one per GPU
where there are GPUs) -> rows back to the driver, which writes the same Parquet shards with
the same resume rules as the local backend.

The driver writes the shards, so a run's folder is the same whichever backend made it. The
dedup cache is the driver's SQLite file; actors on other machines cannot read it, so on Ray
identical bytes are judged once per batch, not once per run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from llavaguard.annotate.store import ResultStore
from llavaguard.inputs.sources import Item


class _Actor:
    """Holds one Guard (one model) for its lifetime; answers batches of items."""

    def __init__(self, config: Any) -> None:
        from llavaguard.annotate.run import Annotator

        self.cfg = config  # the AnnotateConfig itself: pickled, so secrets travel unmasked
        self.annotator = Annotator(config.guard.build(), cache=None)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        from llavaguard.annotate.run import Summary, prepare

        prepared = []
        for i in range(len(batch["id"])):
            path, blob, error = (_missing(batch[k][i]) for k in ("path", "blob", "error"))
            item = Item(id=str(batch["id"][i]), key=str(batch["key"][i]),
                        data=str(path) if path is not None else bytes(blob or b""),
                        error=error)  # fmt: skip
            prepared.append(prepare(item, self.cfg.guard.image_limits))
        rows = self.annotator(prepared, Summary())
        # one JSON string a row: Ray's columnar batches would turn missing values into NaN
        return {"row": [json.dumps(r, default=_plain) for r in rows]}


def _missing(value: Any) -> Any:
    """None for what Ray's columnar batches made of a missing value (NaN)."""
    if value is None:
        return None
    try:
        return None if value != value else value  # NaN, whatever its float type
    except (TypeError, ValueError):  # arrays and other values without a plain comparison
        return value


def _plain(value: Any) -> Any:
    """numpy scalars (what Ray hands the actor) as plain Python values."""
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def run_ray(
    cfg: Any,
    items: Iterable[Item],
    store: ResultStore,
    summary: Any,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)  # fmt: skip
    rows_in = [
        {"id": it.id, "key": it.key, "error": it.error,
         "path": it.data if isinstance(it.data, str) else None,
         "blob": it.data if isinstance(it.data, bytes) else None}
        for it in items
    ]  # fmt: skip
    if not rows_in:
        return
    gpus = int(ray.cluster_resources().get("GPU", 0))
    ds = ray.data.from_items(rows_in).map_batches(
        _Actor,
        fn_constructor_kwargs={"config": cfg},
        batch_size=cfg.batch_size,
        concurrency=cfg.ray_actors,
        num_gpus=1 if gpus else 0,
        batch_format="default",
    )
    buffer: list[dict[str, Any]] = []
    for packed in ds.iter_rows():
        r = json.loads(packed["row"])
        if r["error"] and r["rating"] is None:
            summary.failed += 1
        elif r["cached"]:
            summary.cached += 1
        else:
            summary.assessed += 1
        buffer.append(r)
        if on_batch is not None:
            on_batch(1)
        if len(buffer) >= cfg.shard_size:
            summary.shards.append(str(store.write_shard(buffer)))
            buffer = []
    if buffer:
        summary.shards.append(str(store.write_shard(buffer)))
