"""The efficiency and resources time series: rows gathered over ticks, written together.

Every insert into DuckDB has a fixed cost of a millisecond or two whatever its size, so at a one
second resource interval writing each tick's rows at once would cost the model's core more than
everything else the tick does. Rows wait here, in order, until the oldest is ``every_s`` old or
someone flushes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = ["SeriesRows"]

_EFFICIENCY = (
    "ts", "interval_s", "route", "requests", "errors",
    "p50_ms", "p95_ms", "p99_ms", "max_ms", "ttfb_p50_ms",
)  # fmt: skip
_RESOURCES = (
    "ts", "process_cpu_percent", "process_rss_bytes", "system_cpu_percent",
    "system_memory_used_percent", "cgroup_memory_bytes", "cgroup_memory_max_bytes",
    "gpu_utilization_percent", "gpu_memory_used_bytes",
)  # fmt: skip
_INTEGERS = {"requests", "errors", "process_rss_bytes", "cgroup_memory_bytes",
             "cgroup_memory_max_bytes", "gpu_memory_used_bytes"}  # fmt: skip


class SeriesRows:
    """Buffers time-series rows and hands them to ``submit(table, columns)`` in batches."""

    def __init__(
        self, submit: Callable[[str, dict[str, np.ndarray]], None], *, every_s: float = 5.0
    ) -> None:
        self._submit = submit
        self._every_s = every_s
        self._rows: dict[str, list[tuple[Any, ...]]] = {"efficiency": [], "resources": []}
        self._oldest: float | None = None
        self._lock = threading.Lock()

    def add_efficiency(
        self, stamp: np.datetime64, interval_s: float, summaries: list[tuple[str, dict[str, Any]]]
    ) -> None:
        """One row per route (and ``*`` for all) from :func:`summarize` figures."""
        rows = []
        for route, figures in summaries:
            requests, latency = figures["requests"], figures["latency_ms"]
            rows.append(
                (stamp, interval_s, route, requests["count"], requests["errors"], latency["p50"],
                 latency["p95"], latency["p99"], latency["max"], figures["ttfb_ms"]["p50"])
            )  # fmt: skip
        self._add("efficiency", rows)

    def add_resources(self, stamp: np.datetime64, sample: dict[str, Any]) -> None:
        """One row of a :class:`ResourceSampler` sample (GPUs summed, utilization averaged)."""
        gpus = sample.get("gpus") or []
        cgroup = sample.get("cgroup") or {}
        utilization = [
            g["utilization_percent"] for g in gpus if g.get("utilization_percent") is not None
        ]
        used = [g["memory_used_bytes"] for g in gpus if g.get("memory_used_bytes") is not None]
        row = (
            stamp,
            sample["process"].get("cpu_percent"),
            sample["process"].get("rss_bytes"),
            sample["system"].get("cpu_percent"),
            sample["system"].get("memory_used_percent"),
            cgroup.get("memory_current_bytes"),
            cgroup.get("memory_max_bytes"),
            sum(utilization) / len(utilization) if utilization else None,
            sum(used) if used else None,
        )
        self._add("resources", [row])

    def submit_due(self, now: float | None = None) -> None:
        """Hand the rows over if the oldest has waited ``every_s``."""
        now = time.monotonic() if now is None else now
        if self._oldest is not None and now - self._oldest >= self._every_s:
            self.submit()

    def submit(self) -> None:
        """Hand every buffered row over now."""
        with self._lock:
            taken = {table: rows for table, rows in self._rows.items() if rows}
            self._rows = {"efficiency": [], "resources": []}
            self._oldest = None
        for table, rows in taken.items():
            names = _EFFICIENCY if table == "efficiency" else _RESOURCES
            self._submit(
                table,
                {
                    name: _column(name, values)
                    for name, values in zip(names, zip(*rows, strict=True), strict=True)
                },
            )

    def _add(self, table: str, rows: list[tuple[Any, ...]]) -> None:
        with self._lock:
            self._rows[table].extend(rows)
            if self._oldest is None:
                self._oldest = time.monotonic()


def _column(name: str, values: tuple[Any, ...]) -> np.ndarray:
    if name == "ts":
        return np.array(values, dtype="datetime64[us]")
    if name == "route":
        return np.array(values, dtype=object)
    if name in _INTEGERS:
        # An object column keeps None as NULL; the store casts it to BIGINT on insert.
        if any(value is None for value in values):
            return np.array(values, dtype=object)
        return np.array(values, dtype=np.int64)
    return np.array([np.nan if value is None else value for value in values], dtype=np.float64)
