"""The decoded image memory the server holds at once, admitted against a budget.

A 4.9 KB PNG can decode to hundreds of MB, so the body limit says nothing about memory. Each
request reserves what its images will take decoded (known from their headers, before any
pixel is decoded) for as long as it holds them, and is refused when the server's budget
cannot take it: the client hears 503 and retries, instead of the server running out.
"""

from __future__ import annotations


class OverBudget(Exception):
    """The reservation does not fit now; it may once other requests finish."""


class MemoryBudget:
    """Bytes reserved by requests in flight, at most ``limit``. Used from the event loop."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        """Reserve ``size`` bytes; OverBudget at once if they do not fit. ``give`` them back."""
        if self.used + size > self.limit:
            raise OverBudget(
                f"{_mb(self.used)} of {_mb(self.limit)} of image memory in use, "
                f"{_mb(size)} more asked"
            )
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size


def _mb(size: int) -> str:
    return f"{size / 2**20:.0f} MB"
