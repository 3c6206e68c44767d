"""Resumable batch pipelines, in datatrove's shape: a ``Step`` turns a batch of items into one
row each, a writer makes finished rows durable, and an executor (local threads or Ray Data
actors) moves items from the one to the other.

    items -> [reader threads: step.prepare] -> step.process(batch) -> writer.write(rows)

Annotation, rationales, evaluation's predictions and the demo's stages run on it. What this
package does not know: models, policies, images or what a row means beyond its ``id`` and
the status the step gives it (``records.is_failed`` is the one definition of a failed item).
"""

from llavaguard.pipeline.executor import Executor, RunStats
from llavaguard.pipeline.local import LocalExecutor
from llavaguard.pipeline.records import FAILED, is_failed
from llavaguard.pipeline.shards import ShardWriter
from llavaguard.pipeline.stages import Stages
from llavaguard.pipeline.step import Result, Step
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
    "Writer",
    "is_failed",
]


def executor(backend: str, step: Step, writer: Writer, **kw) -> Executor:
    """The executor for a backend name: ``local`` or ``ray``."""
    if backend == "ray":
        from llavaguard.pipeline.ray import RayExecutor

        return RayExecutor(step, writer, **kw)
    return LocalExecutor(step, writer, **kw)
