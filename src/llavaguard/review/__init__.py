"""Human review of what a safeguard judged: the rows under review (``rows``), the reviewers'
corrections (``corrections``), and (to come) the web page and the export to a labelled set.

Flow: an annotation results folder or an ``assess`` JSONL file -> ``ReviewRows`` (DuckDB over
the files, filtered, sorted and paged on the server) -> the page -> ``Corrections`` (SQLite
beside the results) -> export as labelled samples.
"""

from llavaguard.review.corrections import Conflict, Correction, Corrections
from llavaguard.review.export import export_reviewed
from llavaguard.review.rows import Page, Query, ReviewRows

__all__ = [
    "Conflict",
    "Correction",
    "Corrections",
    "Page",
    "Query",
    "ReviewRows",
    "export_reviewed",
]
