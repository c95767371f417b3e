"""Serving efficiency: request counts, latency and errors, per route and over rolling windows.

:meth:`EfficiencyTracker.observe` runs on the request path, so it only appends one tuple and bumps
a few integers on the event loop's thread. Readers copy the ring with ``list()``, which CPython
does without releasing the GIL, and compute percentiles in their own thread.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LATENCY_BUCKETS", "EfficiencyTracker", "RouteTotals", "WindowFigures", "summarize"]

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


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """What the serving status is decided from: the health window's count, errors and p99."""

    count: int
    errors: int
    p99_s: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.count if self.count else 0.0


class _RollingWindow:
    """The last window's statuses and latencies as arrays, extended by each call's new requests.

    Summarizing 100,000 ring tuples from scratch costs about 50 ms of CPU; extending arrays with
    the second's new requests and taking one percentile costs a few, so the status can be kept
    current every resource tick without rivalling the model for its core.
    """

    def __init__(self, capacity: int, started: float) -> None:
        self._capacity = capacity
        self._until = started
        self._t = np.empty(0, dtype=np.float64)
        self._status = np.empty(0, dtype=np.int16)
        self._latency = np.empty(0, dtype=np.float64)
        self._lock = threading.Lock()

    def advance(self, tracker: EfficiencyTracker, window_s: float) -> WindowFigures:
        with self._lock:
            now = time.monotonic()
            new = tracker.between(self._until, now)
            self._until = now
            count = len(new)
            keep = self._t > now - window_s
            self._t = np.concatenate(
                (self._t[keep], np.fromiter((i[0] for i in new), np.float64, count))
            )[-self._capacity :]
            self._status = np.concatenate(
                (self._status[keep], np.fromiter((i[1] for i in new), np.int16, count))
            )[-self._capacity :]
            self._latency = np.concatenate(
                (self._latency[keep], np.fromiter((i[2] for i in new), np.float64, count))
            )[-self._capacity :]
            if self._latency.size == 0:
                return WindowFigures(0, 0, None)
            # Same "lower" percentile as /health's, so both agree on the status they imply.
            p99 = float(np.percentile(self._latency, 99, method="lower"))
            errors = int(np.count_nonzero(self._status >= 500))
            return WindowFigures(int(self._latency.size), errors, p99)


class EfficiencyTracker:
    """Totals for Prometheus and a bounded ring of recent requests for windowed figures."""

    def __init__(self, *, ring_size: int = 100_000) -> None:
        # (monotonic time, status, latency seconds, ttfb seconds or None, route)
        self._ring: deque[tuple[float, int, float, float | None, str]] = deque(maxlen=ring_size)
        self.totals: dict[tuple[str, str], RouteTotals] = {}
        self.in_flight = 0
        self.started = time.monotonic()
        self._window = _RollingWindow(ring_size, self.started)

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

    def window_figures(self, window_s: float) -> WindowFigures:
        """Count, errors and p99 latency of the last ``window_s`` seconds, cheaply.

        Meant to be called with one window size, periodically: each call only reads the requests
        that finished since the previous one.
        """
        return self._window.advance(self, window_s)

    def covered_s(self) -> float:
        """How far back the ring reaches now (it forgets the oldest when full)."""
        if len(self._ring) < (self._ring.maxlen or 0):
            return time.monotonic() - self.started
        oldest = self._ring[0][0]
        return time.monotonic() - oldest


def summarize(
    requests: list[tuple[float, int, float, float | None, str]],
    window_s: float,
    *,
    now: float | None = None,
) -> dict[str, Any]:
    """The /health ``requests``, ``latency_ms`` and ``ttfb_ms`` objects for these requests.

    ``per_second`` divides by ``window_s``, or, given ``now`` (monotonic), by the time the
    requests actually cover: from the start of the earliest to ``now``, at most ``window_s``,
    so that 500 requests a second ago read 500/s and not 500 over a five-minute window.
    """
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
    span = window_s
    if now is not None and count:
        finished = np.fromiter((item[0] for item in requests), dtype=np.float64, count=count)
        span = min(window_s, now - float((finished - latencies).min()))
    return {
        "requests": {
            "count": count,
            "per_second": round(count / span, 3) if span > 0 else 0.0,
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
