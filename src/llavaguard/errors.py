"""One exception hierarchy for everything a user can get wrong or run into.

Every message is a single line that names the thing at fault (a file, a code, a model id),
so the CLI can print it as is and a batch can store it on the record it belongs to.
"""

from __future__ import annotations

import re

# a C++ library's source location in its messages, e.g. xgrammar's
# "[23:43:10] /project/cpp/json_schema_converter.cc:5082: ": internals, not the user's business
_SOURCE_LOCATION = re.compile(r"\[[\d:]+\]\s*\S+?\.(?:cc|cpp|cu|h|hpp):\d+:\s*")


def one_line(message: str) -> str:
    """A library's message on one line, without its C++ source locations."""
    return _SOURCE_LOCATION.sub("", " ".join(message.split()))


class LlavaGuardError(Exception):
    """Base of all errors this package raises on purpose."""

    def __str__(self) -> str:  # keep every message on one line
        return " ".join(super().__str__().split())


class PolicyError(LlavaGuardError):
    """A policy file, name or category code that cannot be used."""


class ImageError(LlavaGuardError):
    """An input that cannot be turned into an RGB image within the limits."""


class ModelLoadError(LlavaGuardError):
    """A model that cannot be found, downloaded or loaded."""


class EngineError(LlavaGuardError):
    """An engine that failed while answering."""


class ConfigError(LlavaGuardError):
    """An option value that does not make sense."""
