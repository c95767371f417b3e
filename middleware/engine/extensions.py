"""What a part beside the engine registers with it: the sidecar registers its upstream.

Like a collector registered with a prometheus_client registry, an extension is asked when the
engine answers (``/readyz``, ``/health``, ``/metrics``), from the monitor API's thread; it reads
figures it already holds and never waits on the network or the request path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client.core import Metric

__all__ = ["EngineExtension"]


class EngineExtension(Protocol):
    """A part that adds to what the engine reports about itself."""

    name: str
    """Its section of the ``/health`` report."""

    def readiness_problems(self) -> list[str]:
        """Why the part is not ready to serve; empty when it is."""

    def health(self) -> dict[str, Any]:
        """Its section of ``/health``."""

    def metrics(self) -> Iterable[Metric]:
        """Its metric families for ``/metrics``."""
