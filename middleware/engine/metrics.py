"""Prometheus exposition through one injected registry and a custom collector.

The collector reads the engine's counters when scraped, so the request path never touches a
prometheus_client lock. Label values come from route templates (capped) and feature names
(capped by ``max_features``), never from raw paths.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from ..serving.efficiency import LATENCY_BUCKETS

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["EngineCollector", "build_registry"]

_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")
_HEALTH = ("ok", "degraded", "failing")
_BOUNDS = [_bound for _bound in (*(str(b) for b in LATENCY_BUCKETS), "+Inf")]

_CAPTURE_COUNTERS = (
    ("sampled", "Requests sampled for capture (5xx always are)."),
    ("stored", "Captured requests written to the log store."),
    ("dropped", "Captured requests dropped because the writer queue was full."),
    ("write_errors", "Captured requests lost to log store failures."),
    ("parse_errors", "Captured request bodies that could not be parsed."),
    ("fields_capped", "Fields, rows or names cut by the capture limits."),
    ("fields_redacted", "Fields left out by the redact setting."),
    ("names_capped", "Feature values dropped because max_features names were tracked."),
    ("models_capped", "Requests counted under no model because 256 model names were tracked."),
    ("rows_expired", "Feature rows deleted by retention."),
    ("rows_evicted", "Feature rows deleted to keep the store under max_db_bytes."),
)


class EngineCollector(Collector):
    """Builds every inferwatch metric family from the engine's state at scrape time."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        engine = self._engine
        yield from self._requests(engine)
        yield from self._capture(engine)
        yield from self._resources(engine.latest_resources)
        health = GaugeMetricFamily(
            "inferwatch_health_status",
            "1 for the current serving health status (ok, degraded or failing).",
            labels=["status"],
        )
        current = engine.health_status()
        for status in _HEALTH:
            health.add_metric([status], 1.0 if status == current else 0.0)
        yield health
        yield from engine.extra_metrics()

    def _requests(self, engine: Engine) -> Iterator[Metric]:
        tracker = engine.efficiency
        requests = CounterMetricFamily(
            "inferwatch_requests",
            "Requests served, by method, route template and status class.",
            labels=["method", "route", "code"],
        )
        latency = HistogramMetricFamily(
            "inferwatch_request_duration_seconds",
            "Time from request start to the last response byte.",
            labels=["method", "route"],
        )
        ttfb = HistogramMetricFamily(
            "inferwatch_time_to_first_byte_seconds",
            "Time from request start to the first response body byte.",
            labels=["method", "route"],
        )
        for (method, route), totals in sorted(tracker.totals.items()):
            for code, count in zip(_CLASSES, totals.by_class, strict=True):
                if count:
                    requests.add_metric([method, route, code], count)
            latency.add_metric(
                [method, route], _cumulative(totals.buckets), sum_value=totals.latency_sum
            )
            ttfb.add_metric(
                [method, route], _cumulative(totals.ttfb_buckets), sum_value=totals.ttfb_sum
            )
        yield requests
        yield latency
        yield ttfb
        yield GaugeMetricFamily(
            "inferwatch_requests_in_flight", "Requests being served now.", value=tracker.in_flight
        )

    def _capture(self, engine: Engine) -> Iterator[Metric]:
        snapshot = engine.counters.snapshot()
        for name, text in _CAPTURE_COUNTERS:
            yield CounterMetricFamily(f"inferwatch_capture_{name}", text, value=snapshot[name])
        yield GaugeMetricFamily(
            "inferwatch_capture_queue_depth",
            "Captured requests waiting for the writer.",
            value=len(engine.queue),
        )
        yield GaugeMetricFamily(
            "inferwatch_store_size_bytes",
            "Bytes the log store file and its write-ahead log take on disk.",
            value=engine.writer.db_bytes,
        )
        if engine.db_memory_bytes is not None:
            yield GaugeMetricFamily(
                "inferwatch_store_memory_bytes",
                "Memory DuckDB holds for the log store (buffers, caches, queries).",
                value=engine.db_memory_bytes,
            )

    def _resources(self, sample: dict[str, Any] | None) -> Iterator[Metric]:
        if not sample:
            return
        process, system = sample["process"], sample["system"]
        yield from _gauge("inferwatch_process_cpu_percent",
                          "CPU use of the model's process, in percent of one core.",
                          process.get("cpu_percent"))  # fmt: skip
        yield from _gauge(
            "inferwatch_process_resident_memory_bytes",
            "Resident memory of the model's process.",
            process.get("rss_bytes"),
        )
        yield from _gauge(
            "inferwatch_system_cpu_percent",
            "CPU use of the whole machine.",
            system.get("cpu_percent"),
        )
        yield from _gauge(
            "inferwatch_system_memory_available_bytes",
            "Memory available on the machine.",
            system.get("memory_available_bytes"),
        )
        cgroup = sample.get("cgroup") or {}
        yield from _gauge(
            "inferwatch_cgroup_memory_current_bytes",
            "Memory charged to the container's cgroup.",
            cgroup.get("memory_current_bytes"),
        )
        yield from _gauge(
            "inferwatch_cgroup_memory_max_bytes",
            "The container's memory limit (absent when unlimited).",
            cgroup.get("memory_max_bytes"),
        )
        yield from _gauge(
            "inferwatch_cgroup_cpu_limit_cores",
            "The container's CPU limit in cores (absent when unlimited).",
            cgroup.get("cpu_limit_cores"),
        )
        if cgroup.get("throttled_seconds") is not None:
            yield CounterMetricFamily(
                "inferwatch_cgroup_cpu_throttled_seconds",
                "Time the container's CPU was throttled.",
                value=cgroup["throttled_seconds"],
            )
        if cgroup.get("memory_oom_kills") is not None:
            yield CounterMetricFamily(
                "inferwatch_cgroup_oom_kills",
                "Processes the kernel killed in the container for memory.",
                value=cgroup["memory_oom_kills"],
            )
        gpus = sample.get("gpus") or []
        for name, key, text in (
            ("gpu_utilization_percent", "utilization_percent", "GPU utilization."),
            ("gpu_memory_used_bytes", "memory_used_bytes", "GPU memory in use."),
            ("gpu_memory_total_bytes", "memory_total_bytes", "GPU memory in all."),
            ("gpu_temperature_celsius", "temperature_c", "GPU temperature."),
            ("gpu_power_watts", "power_watts", "GPU power draw."),
            ("gpu_process_memory_bytes", "process_memory_bytes",
             "GPU memory used by the model's process."),
        ):  # fmt: skip
            family = GaugeMetricFamily(f"inferwatch_{name}", text, labels=["gpu", "name"])
            for gpu in gpus:
                if gpu.get(key) is not None:
                    family.add_metric([str(gpu["index"]), str(gpu.get("name") or "")], gpu[key])
            yield family


def _gauge(name: str, text: str, value: float | None) -> Iterator[Metric]:
    if value is not None:
        yield GaugeMetricFamily(name, text, value=value)


def _cumulative(counts: list[int]) -> list[tuple[str, float]]:
    running = 0
    out = []
    for bound, count in zip(_BOUNDS, counts, strict=True):
        running += count
        out.append((bound, running))
    return out


def build_registry(engine: Engine) -> CollectorRegistry:
    """A registry of this engine's metrics only (never the process-global one)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EngineCollector(engine))
    return registry
