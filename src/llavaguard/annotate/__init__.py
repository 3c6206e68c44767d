"""Dataset annotation: stream a source through a Guard into resumable Parquet shards, then
report on the results and export curated subsets.

Flow: ``inputs.sources`` (items) -> ``run`` (read/decode ahead, dedup cache, Guard batches;
``ray_backend`` on a cluster) -> ``store`` (shards, manifest, cache) -> ``report``, ``export``.
"""

from llavaguard.annotate.export import export, select
from llavaguard.annotate.report import summarize, write_report
from llavaguard.annotate.run import AnnotateConfig, Summary, annotate
from llavaguard.annotate.store import ResultStore

__all__ = [
    "AnnotateConfig",
    "ResultStore",
    "Summary",
    "annotate",
    "export",
    "select",
    "summarize",
    "write_report",
]
