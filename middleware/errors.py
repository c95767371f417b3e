"""The one exception type inferwatch raises to its callers."""

from __future__ import annotations

__all__ = ["MonitorError"]


class MonitorError(Exception):
    """A monitoring failure, described in one sentence.

    Raised at start-up for bad settings or files given by the user; at run time the engine reports
    failures through its counters and /health instead of raising into the model's traffic.
    """
