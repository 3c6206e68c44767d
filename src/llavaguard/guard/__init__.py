"""The Guard and what it needs to answer: the spec that builds it, the scoring of ratings and
categories, and the record it returns. Engines below it know nothing of policies; the steps
above it (annotate, evaluate, serve, ...) know nothing of engines."""

from llavaguard.guard.assessment import Assessment
from llavaguard.guard.core import FilterResult, Guard, Mode

__all__ = ["Assessment", "FilterResult", "Guard", "Mode"]
