"""llavaguard: judge images against written safety policies with vision-language models.

Importing the package is cheap: torch and transformers load only when an engine is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Assessment", "Guard", "GuardSpec", "Policy", "__version__"]

if TYPE_CHECKING:
    from llavaguard.guard import Assessment, Guard
    from llavaguard.policy import Policy

_LAZY = {
    "Assessment": "llavaguard.guard",
    "Guard": "llavaguard.guard",
    "GuardSpec": "llavaguard.guard",
    "Policy": "llavaguard.policy",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llavaguard' has no attribute {name!r}")
