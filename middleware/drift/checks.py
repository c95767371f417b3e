"""The engine's periodic skew check: the baseline in force, the latest report and its history.

The baseline file is re-read when it changes on disk (a mounted ConfigMap is swapped in place);
a broken new file keeps the last good baseline in force and says so on /drift and /readyz.
Reports are kept in the ``drift_reports`` table through the writer thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import duckdb
import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..baseline.model_scope import scoped_cursors
from ..baseline.watched import BaselineFile
from ..errors import MonitorError
from .summary_check import Against, check_window, covered
from .window_cap import capped_window

if TYPE_CHECKING:
    from .host import CheckHost

__all__ = ["BaselineFile", "DriftChecks", "drift_metrics"]

logger = logging.getLogger("inferwatch")

_STATUSES = ("ok", "alert", "insufficient_data", "no_baseline")
_ANOMALY_TYPES = (
    "missing_feature", "unexpected_feature", "type_mismatch", "completeness",
    "unseen_categories", "out_of_range", "non_finite", "parse_error",
)  # fmt: skip


def _without_histograms(report: dict[str, Any]) -> dict[str, Any]:
    """The report as kept in history: histograms are only served with the latest one."""
    slim = dict(report)
    for section in ("features", "prediction"):
        slim[section] = {
            name: {k: v for k, v in entry.items() if k != "histogram"}
            for name, entry in report.get(section, {}).items()
        }
    return slim


class DriftChecks:
    """Runs skew checks against the log store and keeps what they found."""

    def __init__(
        self, engine: CheckHost, model: str | None = None, baseline: str | None = None
    ) -> None:
        self._engine = engine
        self.model = model  # None: every request; else the requests whose path named it
        self.baseline = BaselineFile(baseline if model else engine.check_options.baseline)
        self.latest: dict[str, Any] | None = None
        self.checks = 0
        self.failures = 0

    def run(self, window_s: float | None = None, against: Against | None = None) -> dict[str, Any]:
        """Check the latest ``window`` of traffic now; the report is also kept and stored.

        A check asked for another window (``window_s``) or against an earlier one (``against``)
        is only returned: the periodic check's report stays the latest.
        """
        engine = self._engine
        store = engine.writer.store
        if store is None:
            raise MonitorError(f"The log store is unavailable: {engine.writer.last_error}")
        baseline = self.baseline.refresh()
        options = engine.check_options
        now = datetime.now(UTC)
        cursors = self.cursors()
        try:
            cursor = cursors()
            try:
                # summaries cost the same at any traffic; rows are read newest first, up to a cap
                asked = window_s is not None or against is not None
                requested = window_s = window_s or options.window
                capped = False
                if not covered(cursor, self.model, baseline, window_s, now):
                    window_s, capped = capped_window(
                        cursor, now.replace(tzinfo=None), window_s, options.max_window_rows
                    )
            finally:
                cursor.close()
            report = check_window(
                cursors,
                baseline,
                model=self.model,
                window_s=window_s,
                now=now,
                against=against,
                min_rows=options.min_rows,
                baseline_path=self.baseline.path,
                prediction_output=options.prediction_output,
                naming=engine.writer.naming_report(self.model),
                metadata=engine.served_metadata(self.model),
                attributions_field=options.attributions_field,
            )
        except duckdb.Error as exc:  # the store failed under the check (a full disk, say)
            self.failures += 1
            raise MonitorError(f"Checking the log store failed: {_first_line(exc)}") from exc
        if self.model is not None:
            report["model"] = self.model
        if self.baseline.error is not None:
            report["baseline"]["error"] = self.baseline.error
        # A window cut to its newest max_window_rows says so, and how long it was meant to be.
        report["window"]["capped"] = capped
        if capped:
            report["window"]["requested_s"] = requested
        if asked:
            return report
        self.latest = report
        self.checks += 1
        document = orjson.dumps(_without_histograms(report), option=orjson.OPT_SERIALIZE_NUMPY)
        checked = datetime.fromisoformat(report["checked_at"]).replace(tzinfo=None)
        engine.writer.call(
            lambda s: s.writer.execute(
                "INSERT INTO drift_reports VALUES (?, ?, ?)",
                [checked, report["status"], document.decode()],
            )
        )
        return report

    def cursors(self) -> Callable[[], duckdb.DuckDBPyConnection]:
        """A factory of store cursors that see this check's model's rows only."""
        store = self._engine.writer.store
        if store is None:
            raise MonitorError(f"The log store is unavailable: {self._engine.writer.last_error}")
        return scoped_cursors(store.cursor, self.model)

    def history(self, since: datetime | None, limit: int) -> list[dict[str, Any]]:
        """Earlier reports, newest first: this model's, or every check's for the check over
        every request."""
        store = self._engine.writer.store
        if store is None:
            return []
        floor = (since or datetime(1970, 1, 1, tzinfo=UTC)).astimezone(UTC).replace(tzinfo=None)
        own = "" if self.model is None else "AND json_extract_string(report, '$.model') = ? "
        params = [floor] if self.model is None else [floor, self.model]
        try:
            rows = store.query(
                f"SELECT report FROM drift_reports WHERE ts >= ? {own}"  # noqa: S608
                "ORDER BY ts DESC LIMIT ?",
                [*params, limit],
            )
        except (duckdb.Error, MonitorError) as exc:  # as when the store is unavailable
            logger.warning("inferwatch: reading the drift history failed: %s", _first_line(exc))
            return []
        return [orjson.loads(row[0]) for row in rows]

    def problems(self) -> list[str]:
        """Readiness problems: a baseline that is named but cannot be used."""
        if self.baseline.error is None:
            return []
        return [self.baseline.error]

    def metrics(self) -> Iterator[Metric]:
        """The metric families of this check's latest report."""
        return drift_metrics([self])


def drift_metrics(checks: list[DriftChecks]) -> Iterator[Metric]:
    """Metric families of the latest reports of ``checks``; with a check per model, every
    sample has a ``model`` label (empty for the check over every request)."""
    by_model = any(c.model is not None for c in checks)
    extra = ["model"] if by_model else []
    yield CounterMetricFamily(
        "inferwatch_drift_checks",
        "Skew checks run since start.",
        value=sum(c.checks for c in checks),
    )
    status = GaugeMetricFamily(
        "inferwatch_drift_status",
        "1 for the latest skew check's status.",
        labels=["status", *extra],
    )
    scores = GaugeMetricFamily(
        "inferwatch_drift_score",
        "Drift score of a feature or prediction in the latest check.",
        labels=["role", "feature", "method", *extra],
    )
    thresholds = GaugeMetricFamily(
        "inferwatch_drift_threshold",
        "The threshold its score was compared with.",
        labels=["role", "feature", "method", *extra],
    )
    drifted = GaugeMetricFamily(
        "inferwatch_drift_detected",
        "1 when the feature or prediction drifted in the latest check.",
        labels=["role", "feature", *extra],
    )
    anomalies = GaugeMetricFamily(
        "inferwatch_schema_anomalies",
        "Schema anomalies of each type in the latest check.",
        labels=["type", *extra],
    )
    rows = GaugeMetricFamily(
        "inferwatch_drift_window_rows", "Rows the latest check read.", labels=extra
    )
    outliers = GaugeMetricFamily(
        "inferwatch_outlier_share",
        "Share of the latest check's rows scored over the baseline's outlier threshold.",
        labels=extra,
    )
    multivariate = GaugeMetricFamily(
        "inferwatch_multivariate_score",
        "Mean outlier score of the latest check's rows, and the baseline's band for it.",
        labels=["bound", *extra],
    )
    for check in checks:
        report = check.latest
        if report is None:
            continue
        model = [check.model or ""] if by_model else []
        for name in _STATUSES:
            status.add_metric([name, *model], 1.0 if report["status"] == name else 0.0)
        for role, section in (("input", "features"), ("output", "prediction")):
            for feature, entry in report.get(section, {}).items():
                if entry.get("score") is None:
                    continue
                labels = [role, feature, str(entry.get("method")), *model]
                scores.add_metric(labels, float(entry["score"]))
                thresholds.add_metric(labels, float(entry["threshold"]))
                drifted.add_metric([role, feature, *model], 1.0 if entry.get("drifted") else 0.0)
        counts = dict.fromkeys(_ANOMALY_TYPES, 0)
        for anomaly in report.get("schema_anomalies", []):
            counts[anomaly["type"]] = counts.get(anomaly["type"], 0) + 1
        for kind, count in counts.items():
            anomalies.add_metric([kind, *model], count)
        rows.add_metric(model, report["window"]["rows"])
        share = (report.get("outliers") or {}).get("share")
        if share is not None:
            outliers.add_metric(model, share)
        section = report.get("multivariate") or {}
        for bound, key in (("mean", "mean_score"), ("lower", "lower"), ("upper", "upper")):
            if section.get(key) is not None:
                multivariate.add_metric([bound, *model], section[key])
    yield from (status, scores, thresholds, drifted, anomalies, rows, outliers, multivariate)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__).rstrip(".") + "."
