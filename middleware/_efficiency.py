"""Serving efficiency: request counts, latency and errors, per route and over rolling windows.

:meth:`EfficiencyTracker.observe` runs on the request path, so it only appends one tuple and bumps
a few integers on the event loop's thread. Readers copy the ring with ``list()``, which CPython
does without releasing the GIL, and compute percentiles in their own thread.
"""

from __future__ import annotations

import bisect
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LATENCY_BUCKETS", "EfficiencyTracker", "RouteTotals", "summarize"]

# Model serving spans a 1 ms cache hit to a 60 s generation: Prometheus' defaults stop at 10 s.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip
_STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


@dataclass(slots=True)
class RouteTotals:
    """Monotonic totals of one (method, route) pair since the process started."""

    by_class: list[int] = field(default_factory=lambda: [0] * len(_STATUS_CLASSES))
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    latency_sum: float = 0.0
    ttfb_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    ttfb_sum: float = 0.0
    ttfb_count: int = 0


class EfficiencyTracker:
    """Totals for Prometheus and a bounded ring of recent requests for windowed figures."""

    def __init__(self, *, ring_size: int = 100_000) -> None:
        # (monotonic time, status, latency seconds, ttfb seconds or None, route)
        self._ring: deque[tuple[float, int, float, float | None, str]] = deque(maxlen=ring_size)
        self.totals: dict[tuple[str, str], RouteTotals] = {}
        self.in_flight = 0
        self.started = time.monotonic()

    def observe(
        self, method: str, route: str, status: int, latency: float, ttfb: float | None
    ) -> None:
        """Record one finished request (called on the event loop's thread only)."""
        self._ring.append((time.monotonic(), status, latency, ttfb, route))
        key = (method, route)
        totals = self.totals.get(key)
        if totals is None:
            totals = self.totals[key] = RouteTotals()
        index = status // 100 - 1
        totals.by_class[index if 0 <= index < 5 else 4] += 1
        totals.buckets[bisect.bisect_left(LATENCY_BUCKETS, latency)] += 1
        totals.latency_sum += latency
        if ttfb is not None:
            totals.ttfb_buckets[bisect.bisect_left(LATENCY_BUCKETS, ttfb)] += 1
            totals.ttfb_sum += ttfb
            totals.ttfb_count += 1

    def recent(self, window_s: float) -> list[tuple[float, int, float, float | None, str]]:
        """Requests that finished in the last ``window_s`` seconds, oldest first."""
        now = time.monotonic()
        return self.between(now - window_s, now)

    def between(
        self, start: float, end: float
    ) -> list[tuple[float, int, float, float | None, str]]:
        """Requests that finished in (start, end] on the monotonic clock, oldest first."""
        snapshot = list(self._ring)
        first = bisect.bisect_right(snapshot, start, key=lambda item: item[0])
        last = bisect.bisect_right(snapshot, end, key=lambda item: item[0])
        return snapshot[first:last]

    def covered_s(self) -> float:
        """How far back the ring reaches now (it forgets the oldest when full)."""
        if len(self._ring) < (self._ring.maxlen or 0):
            return time.monotonic() - self.started
        oldest = self._ring[0][0]
        return time.monotonic() - oldest


def summarize(
    requests: list[tuple[float, int, float, float | None, str]], window_s: float
) -> dict[str, Any]:
    """The /health ``requests``, ``latency_ms`` and ``ttfb_ms`` objects for these requests."""
    count = len(requests)
    by_status: dict[str, int] = {}
    errors = 0
    for _, status, _, _, _ in requests:
        key = str(status)
        by_status[key] = by_status.get(key, 0) + 1
        if status >= 500:
            errors += 1
    latencies = np.fromiter((item[2] for item in requests), dtype=np.float64, count=count)
    ttfbs = np.fromiter((item[3] for item in requests if item[3] is not None), dtype=np.float64)
    return {
        "requests": {
            "count": count,
            "per_second": round(count / window_s, 3) if window_s > 0 else 0.0,
            "errors": errors,
            "error_rate": round(errors / count, 6) if count else 0.0,
            "by_status": dict(sorted(by_status.items())),
        },
        "latency_ms": _percentiles(latencies),
        "ttfb_ms": _percentiles(ttfbs),
    }


def _percentiles(seconds: np.ndarray) -> dict[str, float | None]:
    if seconds.size == 0:
        return {"p50": None, "p90": None, "p95": None, "p99": None, "max": None}
    # "lower" reports latencies that were observed, never an interpolation between two.
    p50, p90, p95, p99 = np.percentile(seconds, [50, 90, 95, 99], method="lower") * 1000.0
    return {
        "p50": round(float(p50), 3),
        "p90": round(float(p90), 3),
        "p95": round(float(p95), 3),
        "p99": round(float(p99), 3),
        "max": round(float(seconds.max()) * 1000.0, 3),
    }
