"""Annotation on a Ray cluster: the inputs as work units (``inputs.units``) that engine actors
read, judge and write themselves (``pipeline.ray``), into the same results folder the local
backend writes, one Parquet file and marker per unit.

What the driver holds: the units in flight and the counts, never the run's items or rows.
What survives: a killed driver (finished units are on disk; rerun the command), a killed
worker or a lost node (its unit is tried again on a restarted actor), a unit that fails every
time (recorded in the manifest's run record, the run goes on; the next run tries it again).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path

from llavaguard.annotate.step import AnnotateConfig, AnnotateStep, Summary
from llavaguard.annotate.store import CACHE, ResultStore, SharedCache, schema
from llavaguard.engines import ENGINES
from llavaguard.errors import ConfigError
from llavaguard.inputs.units import count_units, read_unit, units
from llavaguard.pipeline import UnitOutput
from llavaguard.pipeline.shards import UNITS
from llavaguard.pipeline.writer import atomic_write

SETTINGS = "_settings.json"  # in _units/: how the inputs were cut, which must not change


def run_on_ray(
    cfg: AnnotateConfig,
    store: ResultStore,
    policy_id: str,
    summary: Summary,
    on_start: Callable[[int | None], None] | None,
    on_unit: Callable[[Summary], None] | None,
) -> None:
    """The Ray run in a folder ``annotate`` has claimed; ``summary`` fills as units finish."""
    from llavaguard.pipeline.ray import RayExecutor, RayOptions, connect

    _refuse_local_rows(store)
    _keep_units(cfg)
    options = cfg.source_options()
    configs = _actor_configs(cfg)  # checked before the cluster is joined
    if on_start is not None:
        on_start(count_units(cfg.inputs, cfg.source, cfg.unit_size, **options))
    connect(cfg.ray_address)
    cache = SharedCache.start(cfg.output / CACHE) if cfg.dedup else None
    steps = [AnnotateStep(c, policy_id, cache=cache) for c in configs]
    output = UnitOutput(cfg.output, schema=schema, run=store.run, answered="rating")
    ray = RayOptions(address=cfg.ray_address, actors=cfg.ray_actors, cpus=cfg.ray_cpus,
                     gpus=cfg.ray_gpus, batch_size=cfg.batch_size, workers=cfg.workers)  # fmt: skip
    tick = (lambda _: on_unit(summary)) if on_unit is not None else None
    run = RayExecutor(steps, output, partial(read_unit, **options), ray, on_unit=tick)
    run.run(units(cfg.inputs, cfg.source, cfg.unit_size, **options), summary)


def _actor_configs(cfg: AnnotateConfig) -> list[AnnotateConfig]:
    """The run's config for every actor, or one per server of a pool (``ray_base_urls``)."""
    if not cfg.ray_base_urls:
        return [cfg]
    if "base_url" not in ENGINES.get(cfg.guard.engine).Options.model_fields:
        raise ConfigError("--ray-base-url goes with --engine vllm or openai")
    specs = [cfg.guard.model_copy(update={"engine_options": {**cfg.guard.engine_options,
                                                             "base_url": url}})
             for url in cfg.ray_base_urls]  # fmt: skip
    return [cfg.model_copy(update={"guard": s}) for s in specs]


def _refuse_local_rows(store: ResultStore) -> None:
    """A folder with the local backend's shards: their ids would be done twice on Ray (the
    workers know only their units' files), so that run is finished where it began."""
    if store.shards():
        raise ConfigError(
            f"{store.root} holds rows of a local run; finish it with --backend local, or "
            "annotate on Ray into another folder"
        )


def _keep_units(cfg: AnnotateConfig) -> None:
    """Units are cut the same way in every run of a folder: other cuts would name other
    units, and rows already written would be written again."""
    path = Path(cfg.output) / UNITS / SETTINGS
    ours = {"unit_size": cfg.unit_size, "source": cfg.source}
    try:
        theirs = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, (json.dumps(ours) + "\n").encode())
        return
    except (OSError, ValueError):
        raise ConfigError(f"{path} is damaged; use --overwrite to start over") from None
    for key, value in ours.items():
        if theirs.get(key) != value:
            raise ConfigError(
                f"{cfg.output} was cut into units with {key} {theirs.get(key)!r}, not "
                f"{value!r}; use the same, or another output folder"
            )


__all__ = ["run_on_ray"]
