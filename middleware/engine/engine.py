"""The monitoring engine that the middleware and the sidecar share.

It owns the capture queue, the writer thread and the log store, starts once and stops once,
and answers the monitor API's questions. It never raises into the model's traffic: failures
are counted and reported through :meth:`Engine.capture_health` and ``last_error``.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import duckdb
import numpy as np
from prometheus_client.core import Metric

from ..alerts.manager import AlertManager
from ..alerts.options import AlertOptions
from ..baseline.file import Baseline
from ..baseline.model_scope import baseline_files
from ..drift.checks import DriftChecks, drift_metrics
from ..drift.options import CheckOptions
from ..errors import MonitorError
from ..evaluation.prometheus import evaluation_metrics
from ..evaluation.quality import evaluate
from ..fleet.options import FleetOptions
from ..fleet.shipping import FleetShipper
from ..payload.exchange import CaptureCounters, CaptureQueue
from ..payload.models import ModelMetadata
from ..serving.efficiency import EfficiencyTracker, WindowFigures, summarize
from ..serving.resources import ResourceSampler
from ..serving.series import SeriesRows
from ..settings import Settings
from ..stats.outliers import OutlierModel
from ..store.columns import ColumnHints
from ..store.options import StoreOptions
from ..store.writer import StoreWriter
from .extensions import EngineExtension
from .periodic import Periodic

__all__ = ["Engine"]

logger = logging.getLogger("inferwatch")


class Engine:
    """Everything inferwatch runs beside the model, built from one :class:`Settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.extensions: list[EngineExtension] = []
        self.counters = CaptureCounters()
        self.queue = CaptureQueue(settings.queue_size, self.counters)
        # the model server's own account of its models, read off the request path
        self.metadata = ModelMetadata(settings.upstream if settings.model_metadata else None)
        self.writer = StoreWriter(
            StoreOptions.from_settings(settings),
            self.queue,
            self.counters,
            hints=self.column_hints,
            seen=self.metadata.note_path,
            outliers=self.outliers,
            baselines=self.summary_baselines,
        )
        self.efficiency = EfficiencyTracker()
        # Two threads: a check that takes longer than its interval must not delay the samples.
        self.sampling = Periodic("inferwatch-resources")
        self.checking = Periodic("inferwatch-checks")
        self.series = SeriesRows(self.writer.submit_series)
        self.sampler: ResourceSampler | None = None
        self.latest_resources: dict[str, Any] | None = None
        self._last_tick = time.monotonic()
        self._last_status: str | None = None
        self.db_memory_bytes: int | None = None  # DuckDB's own memory, read each resource tick
        self.check_options = CheckOptions.from_settings(settings)  # what each drift check reads
        self.drift = DriftChecks(self)
        # a check of its own for each model named in the baselines setting
        self.models = {
            model: DriftChecks(self, model, path)
            for model, path in baseline_files(settings.baselines).items()
        }
        self.model_evaluations: dict[str, dict[str, Any]] = {}
        self.latest_evaluation: dict[str, Any] | None = None
        self.alerts = AlertManager(
            AlertOptions.from_settings(settings),
            record=lambda row: self._record_row("alerts", row),
            record_delivery=lambda row: self._record_row("alert_deliveries", row),
        )
        # its own thread: a slow object store must delay neither the checks nor the samples
        self.shipping = Periodic("inferwatch-fleet")
        self.fleet = (
            FleetShipper(FleetOptions.from_settings(settings), self._reader)
            if settings.fleet_url
            else None
        )
        self._lifecycle = threading.Lock()
        self.running = False
        self._stopped = False

    def start(self) -> None:
        """Open the store and start the background threads; a second call does nothing."""
        with self._lifecycle:
            if self.running or self._stopped:
                return
            self.writer.start()
            self._restore_alerts()
            self.sampler = ResourceSampler(
                pid=self.settings.model_pid, process_match=self.settings.model_process
            )
            self.sampling.add("resources", self.settings.resource_interval, self._tick)
            interval = self.settings.check_interval
            self.checking.add("checks", interval, self.run_checks, first_in=interval)
            self.sampling.start()
            self.checking.start()
            if self.fleet is not None:
                every = self.settings.fleet_interval
                self.shipping.add("fleet", every, self.fleet.ship, first_in=every)
                self.shipping.start()
            self.running = True
            # Processes that never send lifespan shutdown still get their captures written.
            atexit.register(self.stop)
        logger.info("inferwatch engine started (store %s)", self.settings.db)

    def stop(self, timeout: float = 30.0) -> None:
        """Write everything already captured, then stop; a second call does nothing."""
        with self._lifecycle:
            if not self.running:
                return
            self.running = False
            self._stopped = True
        # A check still running after a second is interrupted when the writer closes the store.
        self.checking.stop(timeout=1.0)
        self.sampling.stop()
        self.alerts.close(timeout=5.0)
        if self.sampler is not None:
            self.sampler.close()
        self.series.submit()
        self.shipping.stop()
        self._last_shipment(timeout)
        self.writer.stop(timeout)
        self.checking.stop(timeout=5.0)
        atexit.unregister(self.stop)
        logger.info(
            "inferwatch engine stopped: %d sampled, %d stored, %d dropped, %d write errors",
            self.counters.sampled,
            self.counters.stored,
            self.counters.dropped,
            self.counters.write_errors,
        )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything captured so far is in the store."""
        self.series.submit()
        return self.writer.flush(timeout)

    def _reader(self) -> Any:
        store = self.writer.store
        if store is None:
            raise MonitorError(f"The log store is unavailable: {self.writer.last_error}")
        return store.cursor()

    def _last_shipment(self, timeout: float) -> None:
        """Ship every minute written, the open one too: this process adds no more rows."""
        if self.fleet is None:
            return
        try:
            self.writer.flush(timeout)
            self.fleet.ship(final=True)
        except MonitorError as exc:
            logger.warning("inferwatch: the last shipment to the fleet failed: %s", exc)

    def readiness_problems(self) -> list[str]:
        """Why the engine cannot do its job yet; empty when it can."""
        problems = []
        if not self.running:
            problems.append("the monitoring engine is not running")
        elif self.writer.store is None:
            problems.append(f"the log store is unavailable: {self.writer.last_error}")
        problems.extend(self.drift.problems())
        for extension in self.extensions:
            problems.extend(extension.readiness_problems())
        return problems

    def register(self, extension: EngineExtension) -> None:
        """Add a part's readiness, its ``/health`` section and its metrics to the engine's."""
        self.extensions.append(extension)

    def outliers(self) -> dict[str | None, OutlierModel]:
        """The outlier models that the writer scores input rows with: each model's own from the
        ``baselines`` setting, and the ``baseline``'s (under None) for the rows of the others."""
        found: dict[str | None, OutlierModel] = {}
        baseline = self.drift.baseline.baseline
        if baseline is not None and baseline.outliers is not None:
            found[None] = baseline.outliers
        for model, checks in self.models.items():
            own = checks.baseline.baseline
            if own is not None and own.outliers is not None:
                found[model] = own.outliers
        return found

    def summary_baselines(self) -> dict[str | None, Baseline | None]:
        """The baselines whose bins the writer folds rows on: the ``baseline`` (under None,
        for every request) and each model's own from the ``baselines`` setting."""
        found: dict[str | None, Baseline | None] = {None: self.drift.baseline.baseline}
        for model, checks in self.models.items():
            found[model] = checks.baseline.baseline
        return found

    def column_hints(self) -> ColumnHints:
        """Names for positional payloads, from the baseline's column order when there is one."""
        baseline = self.drift.baseline.baseline
        by_model = {}
        for model, checks in self.models.items():
            if checks.baseline.baseline is not None and checks.baseline.baseline.columns:
                by_model[model] = checks.baseline.baseline.columns
        columns = baseline.columns if baseline is not None and baseline.columns else None
        return ColumnHints(columns=columns, model_columns=by_model)

    def served_metadata(self, model: str | None = None) -> dict[str, Any] | None:
        """A model's metadata as its server told it; without ``model``, the only one's."""
        if model is None:
            models = self.metadata.models()
            model = models[0] if len(models) == 1 else None
        found = self.metadata.get(model)
        return {"model": model, **found} if found else None

    def checks_for(self, model: str | None) -> DriftChecks:
        """The checks of ``model`` (None: of every request); MonitorError for an unknown one."""
        if model is None:
            return self.drift
        if model not in self.models:
            known = ", ".join(sorted(self.models)) or "none"
            raise MonitorError(f"No baseline for model {model!r} (models: {known}).")
        return self.models[model]

    def run_checks(self) -> dict[str, Any]:
        """One round of checks: skew and drift, model quality, then the alert rules.

        The rules run even when a check fails (an unavailable store is what some of them watch).
        """
        report = quality = None
        try:
            for model, checks in self.models.items():
                try:
                    checks.run()
                    self.evaluate(model)
                except MonitorError as exc:  # one model's failure must not stop the others
                    logger.warning("inferwatch: checking model %r failed: %s", model, exc)
            report = self.drift.run()
            quality = self.evaluate()
        finally:
            self.alerts.evaluate(health=self.health(), drift=report, evaluation=quality)
        return report

    def evaluate(self, model: str | None = None) -> dict[str, Any]:
        """Model quality over the window from the labels joined so far (of one ``model``'s
        requests when given)."""
        checks = self.checks_for(model)
        settings = self.settings
        baseline = checks.baseline.baseline
        cursor = checks.cursors()()
        try:
            report = evaluate(
                cursor,
                window_s=settings.evaluation_window,
                prediction=settings.prediction_output,
                probability=settings.probability_field,
                task=settings.task,
                baseline_quality=baseline.quality if baseline else None,
                expected=_expected(baseline),
                metadata=self.served_metadata(model),
                min_labels=settings.min_labels,
                model=model,
            )
        finally:
            cursor.close()
        if model is None:
            self.latest_evaluation = report
        else:
            report["model"] = model
            self.model_evaluations[model] = report
        return report

    def _tick(self) -> None:
        """Sample resources and append one interval of efficiency figures to the store."""
        now = time.monotonic()
        recent = self.efficiency.between(self._last_tick, now)
        interval, self._last_tick = now - self._last_tick, now
        if self.sampler is not None:
            self.latest_resources = self.sampler.sample()
        self.db_memory_bytes = self._db_memory()
        self._last_status = self._status(
            self.efficiency.window_figures(self.settings.health_window)
        )
        by_route: dict[str, list[tuple[float, int, float, float | None, str]]] = {}
        for item in recent:
            by_route.setdefault(item[4], []).append(item)
        everything = summarize(recent, interval)
        summaries = [("*", everything)]
        for route, items in by_route.items():
            # Most model servers have one route: its figures are the whole interval's.
            same = len(items) == len(recent)
            summaries.append((route, everything if same else summarize(items, interval)))
        stamp = np.datetime64(int(time.time() * 1e6), "us")
        self.series.add_efficiency(stamp, interval, summaries)
        if self.latest_resources is not None:
            self.series.add_resources(stamp, self.latest_resources)
        self.series.submit_due()

    def _db_memory(self) -> int | None:
        """Bytes DuckDB holds (buffers, caches, query state): its part of the process's RSS."""
        store = self.writer.store
        if store is None:
            return None
        try:
            used = store.query("SELECT sum(memory_usage_bytes) FROM duckdb_memory()")
        except (MonitorError, duckdb.Error):
            return None  # the writer reports the store's failures
        return int(used[0][0] or 0)

    def health(self, window_s: float | None = None) -> dict[str, Any]:
        """The /health report over the last ``window_s`` seconds."""
        window = self.settings.health_window if window_s is None else window_s
        now = time.monotonic()
        figures = summarize(self.efficiency.between(now - window, now), window, now=now)
        status = self._status(
            WindowFigures(
                figures["requests"]["count"],
                figures["requests"]["errors"],
                None
                if figures["latency_ms"]["p99"] is None
                else figures["latency_ms"]["p99"] / 1e3,
            )
        )
        if window == self.settings.health_window:
            self._last_status = status
        resources = self.latest_resources
        if resources is None and self.sampler is not None:
            resources = self.latest_resources = self.sampler.sample()
        return {
            "status": status,
            "window_s": window,
            "covered_s": round(min(window, self.efficiency.covered_s()), 3),
            **figures,
            "in_flight": self.efficiency.in_flight,
            "models": sorted(self.models),
            "resources": resources,
            "capture": self.capture_health(),
            "fleet": None if self.fleet is None else self.fleet.health(),
            **{extension.name: extension.health() for extension in self.extensions},
        }

    def health_status(self) -> str:
        """The serving status as of the last resource tick or /health answer.

        Scrapes read this cached value, so that a scrape never pays for the health window.
        """
        if self._last_status is None:
            self._last_status = self._status(
                self.efficiency.window_figures(self.settings.health_window)
            )
        return self._last_status

    def _status(self, figures: WindowFigures) -> str:
        """ok, degraded or failing, from error rate, p99 latency and capture drops."""
        settings, counters = self.settings, self.counters
        error_rate = figures.error_rate
        p99_s = figures.p99_s or 0.0
        if error_rate >= settings.error_rate_failing or p99_s >= settings.latency_p99_failing:
            return "failing"
        drop_rate = counters.dropped / counters.sampled if counters.sampled else 0.0
        if (
            error_rate >= settings.error_rate_degraded
            or p99_s >= settings.latency_p99_degraded
            or drop_rate >= settings.drop_rate_degraded
            or self.writer.store is None
        ):
            return "degraded"
        return "ok"

    def extra_metrics(self) -> Iterator[Metric]:
        """Metric families of the checks that run beside serving (drift, evaluation, alerts)."""
        yield from drift_metrics([self.drift, *self.models.values()])
        yield from evaluation_metrics(self.latest_evaluation, self.model_evaluations)
        yield from self.alerts.metrics()
        if self.fleet is not None:
            yield from self.fleet.metrics()
        for extension in self.extensions:
            yield from extension.metrics()

    def _record_row(self, table: str, row: dict[str, Any]) -> None:
        """Append one alert or delivery row through the writer thread (alerts are rare)."""
        columns = _ROW_TABLES[table]
        values = [row.get(column) for column in columns]
        placeholders = ", ".join("?" for _ in columns)
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"  # noqa: S608
        future = self.writer.call(lambda store: store.writer.execute(sql, values))
        future.add_done_callback(_log_failure(f"storing a row of {table}"))

    def _restore_alerts(self) -> None:
        store = self.writer.store
        if store is None:
            return
        cursor = store.cursor()
        try:
            result = cursor.execute(
                "SELECT * FROM alerts WHERE ts > now()::TIMESTAMP - INTERVAL 7 DAY ORDER BY ts"
            )
            names = [column[0] for column in result.description]
            rows = [dict(zip(names, values, strict=True)) for values in result.fetchall()]
        finally:
            cursor.close()
        self.alerts.restore(rows)

    def capture_health(self) -> dict[str, int | str | None]:
        """The /health ``capture`` object."""
        counters = self.counters
        return {
            "sampled": counters.sampled,
            "stored": counters.stored,
            "dropped": counters.dropped,
            "write_errors": counters.write_errors,
            "queue_depth": len(self.queue),
            "db_bytes": self.writer.db_bytes,
            "db_memory_bytes": self.db_memory_bytes,
            "parse_errors": counters.parse_errors,
            "fields_capped": counters.fields_capped,
            "fields_redacted": counters.fields_redacted,
            "names_capped": counters.names_capped,
            "models_capped": counters.models_capped,
            "rows_stored": counters.rows_stored,
            "rows_expired": counters.rows_expired,
            "rows_evicted": counters.rows_evicted,
            "last_error": self.writer.last_error,
        }


def _expected(baseline: Any) -> tuple[str, str] | None:
    """The baseline's prediction column: (name, dtype), which picks the output evaluated."""
    entry = baseline.prediction if baseline is not None else None
    return (entry.name, entry.dtype) if entry is not None else None


_ROW_TABLES = {
    "alerts": (
        "ts", "id", "episode", "rule", "state", "severity", "since", "duration_s", "summary",
        "details", "value", "threshold", "worst", "source", "links",
    ),
    "alert_deliveries": ("ts", "event_id", "channel", "outcome", "attempts", "error"),
}  # fmt: skip


def _log_failure(what: str) -> Any:
    def report(future: Any) -> None:
        error = future.exception()
        if error is not None:
            logger.warning("inferwatch: %s failed: %s", what, error)

    return report
