"""The engine as the collector runs it: fed by every worker of the pod, and watching them all.

:class:`PodEngine` is the shared :class:`~inferwatch.middleware.engine.engine.Engine` plus what only
a collector knows: which workers are connected, what each handed over or dropped, and each one's CPU
and memory, sampled by pid beside the collector's own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import duckdb
import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..engine.engine import Engine
from ..errors import MonitorError
from ..settings import Settings

__all__ = ["PodEngine", "WorkerState"]

logger = logging.getLogger("inferwatch")

_GONE_KEPT = 256  # workers that left, kept for their drop counts (gunicorn recycles many)


@dataclass(slots=True)
class WorkerState:
    """What the collector knows of one worker process (one pid and one start of its channel)."""

    pid: int
    nonce: int
    connected: bool = True
    # The worker's own cumulative counts, as of its latest batch.
    requests: int = 0
    captures: int = 0
    dropped_requests: int = 0
    dropped_captures: int = 0
    in_flight: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    process: psutil.Process | None = None
    cpu_percent: float | None = None
    rss_bytes: int | None = None


class PodEngine(Engine):
    """The engine of a collector: one store, fed by every worker over the ingest socket."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.workers: dict[tuple[int, int], WorkerState] = {}
        self._workers_lock = threading.Lock()
        self.dropped_requests = 0  # requests whose figures workers could not hand over
        self.last_worker_seen = time.monotonic()
        # Requests earlier collectors counted, by worker-confirmed second: (monotonic time,
        # {status: count}), oldest first; /health adds those within its window.
        self.carried: deque[tuple[float, dict[int, int]]] = deque()

    # Called by the ingest thread.

    def worker_joined(
        self,
        pid: int,
        nonce: int,
        confirmed_drops: tuple[int, int] = (0, 0),
        history: list[tuple[int, dict[int, int]]] | None = None,
    ) -> WorkerState:
        """A worker connected; new to this collector, it brings what earlier ones confirmed:
        their drop counts (not counted again) and its requests per second (counted here)."""
        with self._workers_lock:
            state = self.workers.get((pid, nonce))
            if state is None:
                state = self.workers[(pid, nonce)] = WorkerState(pid, nonce)
                state.dropped_requests, state.dropped_captures = confirmed_drops
                self._carry(history or [])
                try:
                    state.process = psutil.Process(pid)
                    state.process.cpu_percent(None)  # start the interval the next tick reads
                except psutil.Error:
                    state.process = None
            state.connected = True
            self._forget_old()
        return state

    def _carry(self, history: list[tuple[int, dict[int, int]]]) -> None:
        offset = time.monotonic() - time.time()
        carried = sorted([*self.carried, *((second + offset, dict(s)) for second, s in history)],
                         key=lambda item: item[0])  # fmt: skip
        self.carried = deque(carried)

    def worker_left(self, state: WorkerState) -> None:
        with self._workers_lock:
            state.connected = False
            state.in_flight = 0
            self.last_worker_seen = time.monotonic()
        self._sum_in_flight()

    def ingest(
        self, state: WorkerState, records: list[tuple[Any, ...]], totals: Any, in_flight: int
    ) -> None:
        """One batch of a worker: its records, its cumulative counts and its in-flight gauge."""
        observe = self.efficiency.observe
        put = self.queue.put
        for record in records:
            if len(record) == 5:
                observe(*record)
            else:
                observe(record[2], record[4], record[5], record[6], record[7])
                put(record)
        requests, captures, dropped_requests, dropped_captures = totals
        new_dropped = dropped_captures - state.dropped_captures
        if new_dropped > 0:
            # Dropped in the worker: sampled and dropped, as the contract counts them.
            self.counters.sampled += new_dropped
            self.counters.dropped += new_dropped
        lost = dropped_requests - state.dropped_requests
        if lost > 0:
            self.dropped_requests += lost
        state.requests, state.captures = requests, captures
        state.dropped_requests, state.dropped_captures = dropped_requests, dropped_captures
        state.in_flight = in_flight
        state.last_seen = time.monotonic()
        self._sum_in_flight()

    def not_yet_stored(self, records: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        """``records`` less the captures whose request id the store holds already.

        For batches sent again after a collector died: it may have written some before it could
        confirm them. A capture becomes its timing alone, so that the request is still counted.
        """
        ids = [record[1] for record in records if len(record) != 5]
        store = self.writer.store
        if not ids or store is None:
            return records
        try:
            rows = store.query(
                "SELECT request_id FROM requests WHERE request_id IN (SELECT unnest(?))", [ids]
            )
        except (MonitorError, duckdb.Error) as exc:
            logger.warning("inferwatch: could not look for captures sent again: %s", exc)
            return records
        stored = {row[0] for row in rows}
        if not stored:
            return records
        return [
            (r[2], r[4], r[5], r[6], r[7]) if len(r) != 5 and r[1] in stored else r for r in records
        ]

    def write_through(self, timeout: float) -> bool:
        """Wait until every capture taken in so far is written (or counted lost).

        Unlike :meth:`flush`, captures that arrive meanwhile are not waited for, so a read under
        steady traffic answers as soon as what came before it is in the store.
        """
        counters = self.counters
        target = counters.sampled
        deadline = time.monotonic() + timeout
        self.series.submit()
        while counters.stored + counters.dropped + counters.write_errors < target:
            if time.monotonic() > deadline or not self.running:
                return False
            self.writer.wake()
            time.sleep(0.002)
        return True

    def connected_workers(self) -> list[WorkerState]:
        with self._workers_lock:
            return [state for state in self.workers.values() if state.connected]

    def _sum_in_flight(self) -> None:
        self.efficiency.in_flight = sum(s.in_flight for s in self.connected_workers())

    def _forget_old(self) -> None:
        gone = [key for key, state in self.workers.items() if not state.connected]
        for key in gone[: max(0, len(gone) - _GONE_KEPT)]:
            del self.workers[key]

    # The engine's reports, widened to the pod.

    def _tick(self) -> None:
        super()._tick()
        for state in self.connected_workers():
            process = state.process
            if process is None:
                continue
            try:
                with process.oneshot():
                    state.cpu_percent = round(process.cpu_percent(None), 2)
                    state.rss_bytes = process.memory_info().rss
            except psutil.Error:
                state.cpu_percent = state.rss_bytes = None

    def health(self, window_s: float | None = None) -> dict[str, Any]:
        report = super().health(window_s)
        self._add_carried(report)
        resources = report.get("resources")
        if resources is not None:
            report["resources"] = {**resources, **self.pod_resources(resources)}
        return report

    def _add_carried(self, report: dict[str, Any]) -> None:
        """Count the requests earlier collectors confirmed within the window (latencies are this
        collector's own: percentiles of different processes cannot be merged exactly)."""
        window = report["window_s"]
        now = time.monotonic()
        with self._workers_lock:
            while self.carried and self.carried[0][0] < now - self.settings.health_window - 1:
                self.carried.popleft()
            carried = [(t, statuses) for t, statuses in self.carried if t > now - window - 1]
        requests = report["requests"]
        if not carried:
            report["requests"] = {**requests, "from_earlier_collectors": 0}
            return
        by_status = dict(requests["by_status"])
        count, errors = requests["count"], requests["errors"]
        for _, statuses in carried:
            for status, number in statuses.items():
                by_status[str(status)] = by_status.get(str(status), 0) + number
                count += number
                errors += number if status >= 500 else 0
        span = min(window, now - carried[0][0] + 1)
        report["requests"] = {
            **requests,
            "count": count,
            "per_second": round(count / span, 3) if span > 0 else 0.0,
            "errors": errors,
            "error_rate": round(errors / count, 6) if count else 0.0,
            "by_status": dict(sorted(by_status.items())),
            "from_earlier_collectors": count - requests["count"],
        }

    def pod_resources(self, resources: dict[str, Any]) -> dict[str, Any]:
        """Each connected worker's CPU and memory, the collector's own, and their totals."""
        own = resources.get("process") or {}
        workers = [
            {
                "pid": state.pid,
                "cpu_percent": state.cpu_percent,
                "rss_bytes": state.rss_bytes,
                "requests": state.requests,
                "in_flight": state.in_flight,
                "dropped": state.dropped_captures,
            }
            for state in sorted(self.connected_workers(), key=lambda s: s.pid)
        ]
        parts = [*workers, own]
        return {
            "collector": own,
            "workers": workers,
            "total": {
                "cpu_percent": round(sum(p.get("cpu_percent") or 0.0 for p in parts), 2),
                "rss_bytes": sum(p.get("rss_bytes") or 0 for p in parts),
                "processes": len(parts),
            },
        }

    def capture_health(self) -> dict[str, int | str | None]:
        report = super().capture_health()
        report["requests_dropped"] = self.dropped_requests
        report["workers"] = len(self.connected_workers())
        return report

    def extra_metrics(self) -> Iterator[Metric]:
        yield from super().extra_metrics()
        workers = self.connected_workers()
        yield GaugeMetricFamily(
            "inferwatch_workers", "Worker processes connected to the collector.", value=len(workers)
        )
        yield CounterMetricFamily(
            "inferwatch_requests_dropped",
            "Requests whose figures workers could not hand to the collector.",
            value=self.dropped_requests,
        )
        cpu = GaugeMetricFamily(
            "inferwatch_worker_cpu_percent", "CPU use of one worker, in percent of one core.",
            labels=["pid"],
        )  # fmt: skip
        rss = GaugeMetricFamily(
            "inferwatch_worker_resident_memory_bytes", "Resident memory of one worker.",
            labels=["pid"],
        )  # fmt: skip
        for state in workers:
            if state.cpu_percent is not None:
                cpu.add_metric([str(state.pid)], state.cpu_percent)
            if state.rss_bytes is not None:
                rss.add_metric([str(state.pid)], state.rss_bytes)
        yield cpu
        yield rss
