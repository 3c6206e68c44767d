"""Dataset annotation: stream a source through a Guard into resumable Parquet shards, then
report on the results and export curated subsets.

Flow: ``inputs.sources`` (items) -> ``run`` (a ``pipeline`` step: read/decode ahead, dedup
cache, Guard batches; on the local or the Ray executor) -> ``store`` (shards, manifest, cache)
-> ``report``, ``export``.
"""

from llavaguard.annotate.export import export, select
from llavaguard.annotate.report import summarize, write_report
from llavaguard.annotate.run import AnnotateConfig, AnnotateStep, Summary, annotate
from llavaguard.annotate.store import ResultStore

__all__ = [
    "AnnotateConfig",
    "AnnotateStep",
    "ResultStore",
    "Summary",
    "annotate",
    "export",
    "select",
    "summarize",
    "write_report",
]
