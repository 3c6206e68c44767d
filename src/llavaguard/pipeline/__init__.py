"""Resumable batch pipelines, in datatrove's shape: a ``Step`` turns a batch of items into one
row each, a writer makes finished rows durable, and an executor moves items from the one to
the other.

    items -> [reader threads: step.prepare] -> step.process(batch) -> writer.write(rows)

``LocalExecutor`` runs that in this process. ``ray.RayExecutor`` runs it per work unit on Ray
actors, each unit's rows written by its actor (``units.UnitOutput``): the driver streams
units, not items.

Annotation, rationales, evaluation's predictions and the demo's stages run on it. What this
package does not know: models, policies, images or what a row means beyond its ``id`` and
the status the step gives it (``records.is_failed`` is the one definition of a failed item).
"""

from llavaguard.pipeline.executor import Executor, RunStats, UnitStats
from llavaguard.pipeline.local import LocalExecutor
from llavaguard.pipeline.records import FAILED, is_failed
from llavaguard.pipeline.shards import ShardWriter
from llavaguard.pipeline.stages import Stages
from llavaguard.pipeline.step import Result, Step
from llavaguard.pipeline.units import UnitOutput
from llavaguard.pipeline.writer import JsonlWriter, Writer

__all__ = [
    "FAILED",
    "Executor",
    "JsonlWriter",
    "LocalExecutor",
    "Result",
    "RunStats",
    "ShardWriter",
    "Stages",
    "Step",
    "UnitOutput",
    "UnitStats",
    "Writer",
    "is_failed",
]
