"""The Ray executor: Ray Data ``map_batches`` with actors that each hold one set-up step (one
model; one GPU each where the cluster has GPUs). Rows come back to the driver, which writes
them with the same writer, skipping and counting as the local executor does.

Items and results travel pickled, so no value is turned into Ray's columnar types (a missing
value into NaN). The step itself travels with the actor's constructor: what it holds before
``setup`` must pickle (its secrets travel too).
"""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

from llavaguard.pipeline.executor import Batches, Executor, RunStats
from llavaguard.pipeline.step import Step


class _Actor:
    def __init__(self, step: Step) -> None:
        self.step = step
        step.setup()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        items = [self.step.prepare(pickle.loads(b)) for b in batch["item"]]
        results = self.step.process(items)
        return {"result": [pickle.dumps(r) for r in results]}


class RayExecutor(Executor):
    """``actors`` engine actors; ``address`` of a running cluster, or a local one."""

    def __init__(self, *args: Any, actors: int = 1, address: str | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.actors = actors
        self.address = address

    def _results(self, items: Iterator[Any], stats: RunStats) -> Batches:
        import ray

        rows = [{"item": pickle.dumps(it)} for it in items]
        if not rows:
            return
        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                     configure_logging=False)  # fmt: skip
        gpus = int(ray.cluster_resources().get("GPU", 0))
        ds = ray.data.from_items(rows).map_batches(
            _Actor,
            fn_constructor_kwargs={"step": self.step},
            batch_size=self.batch_size,
            concurrency=self.actors,
            num_gpus=1 if gpus else 0,
            batch_format="default",
        )
        for batch in ds.iter_batches(batch_size=self.batch_size, batch_format="default"):
            results = [pickle.loads(b) for b in batch["result"]]
            yield results, len(results)
