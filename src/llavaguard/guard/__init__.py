"""The Guard and what it needs to answer: the spec that builds it, the scoring of ratings and
categories, and the record it returns. Engines below it know nothing of policies; the steps
above it (annotate, evaluate, serve, ...) know nothing of engines.

Names load lazily: options and configs import ``guard.spec`` without the image decoder.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llavaguard.guard.assessment import Assessment
    from llavaguard.guard.core import FilterResult, Guard, Mode
    from llavaguard.guard.spec import GuardSpec

_LAZY = {
    "Assessment": "llavaguard.guard.assessment",
    "FilterResult": "llavaguard.guard.core",
    "Guard": "llavaguard.guard.core",
    "Mode": "llavaguard.guard.core",
    "GuardSpec": "llavaguard.guard.spec",
}

__all__ = ["Assessment", "FilterResult", "Guard", "GuardSpec", "Mode"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llavaguard.guard' has no attribute {name!r}")
