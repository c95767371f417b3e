"""Alert rules, hysteresis, cooldown, de-duplication, history, restore and metrics (no channels)."""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from inferwatch import MonitorError, Settings
from inferwatch.middleware.alerts.manager import AlertManager
from inferwatch.middleware.alerts.options import AlertOptions
from inferwatch.middleware.alerts.rules import RULES
from tests.conftest import require_tool

GIB = 2**30
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_stamps = itertools.count()

# The tables the engine keeps alert history in (proposed DDL; the wiring uses the same text).
ALERTS_DDL = """
CREATE TABLE IF NOT EXISTS alerts (
    ts TIMESTAMP NOT NULL, id VARCHAR NOT NULL, episode VARCHAR NOT NULL, rule VARCHAR NOT NULL,
    state VARCHAR NOT NULL, severity VARCHAR NOT NULL, since TIMESTAMP NOT NULL,
    duration_s DOUBLE NOT NULL, summary VARCHAR NOT NULL, details VARCHAR NOT NULL,
    value DOUBLE, threshold DOUBLE, worst VARCHAR, source VARCHAR NOT NULL, links VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_deliveries (
    ts TIMESTAMP NOT NULL, event_id VARCHAR NOT NULL, channel VARCHAR NOT NULL,
    outcome VARCHAR NOT NULL, attempts INTEGER NOT NULL, error VARCHAR
);
"""


def options(**values: Any) -> AlertOptions:
    return AlertOptions.from_settings(Settings.load(values, environ={}))


def manager(**values: Any) -> AlertManager:
    return AlertManager(options(**values), channels=[])


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def health(
    i: int = 0,
    *,
    count: int = 1000,
    errors: int = 2,
    p99: float = 180.0,
    dropped_per_check: int = 0,
    memory: float | None = 41.5,
    gpu_used: float = 20 * GIB,
) -> dict[str, Any]:
    """A /health report; ``i`` is the check's number, so capture counters grow as they do."""
    return {
        "status": "ok",
        "window_s": 300,
        "requests": {"count": count, "per_second": count / 300, "errors": errors,
                     "error_rate": round(errors / count, 6) if count else 0.0, "by_status": {}},
        "latency_ms": {"p50": 20.0, "p90": 60.0, "p95": 90.0, "p99": p99, "max": p99 * 1.5},
        "resources": {
            "process": {"cpu_percent": 30.0, "rss_bytes": GIB},
            "system": {"cpu_percent": 20.0, "memory_used_percent": 50.0},
            "cgroup": None if memory is None else {
                "memory_current_bytes": int(memory / 100 * 8 * GIB),
                "memory_max_bytes": 8 * GIB, "memory_used_percent": memory},
            "gpus": [{"index": 0, "name": "NVIDIA H100", "utilization_percent": 50.0,
                      "memory_used_bytes": int(gpu_used), "memory_total_bytes": 80 * GIB}],
        },
        "capture": {"sampled": 1000 * (i + 1), "stored": 1000 * (i + 1),
                    "dropped": dropped_per_check * i, "write_errors": 0, "queue_depth": 0},
    }  # fmt: skip


def drift(
    *,
    features: tuple[str, ...] = (),
    predictions: tuple[str, ...] = (),
    anomalies: tuple[dict[str, Any], ...] = (),
    status: str | None = None,
    mean_score: float = 5.0,
    outliers: int = 10,
    attributions: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A /drift report with a fresh ``checked_at``."""

    def column(name: str, drifted: bool) -> dict[str, Any]:
        return {"kind": "numeric", "method": "jensen_shannon", "score": 0.31 if drifted else 0.03,
                "threshold": 0.1, "drifted": drifted, "rows": 5000}  # fmt: skip

    bad = bool(features or predictions or anomalies)
    return {
        "status": status or ("alert" if bad else "ok"),
        "checked_at": (T0 + timedelta(seconds=next(_stamps))).isoformat(),
        "drift_detected": bool(features or predictions),
        "skew_detected": bool(anomalies),
        "drifted_features": list(features),
        "features": {name: column(name, name in features) for name in ("age", "income", "city")},
        "prediction": {"prediction": column("prediction", "prediction" in predictions)},
        "schema_anomalies": list(anomalies),
        "multivariate": {"method": "pca_mahalanobis", "rows": 2000, "mean_score": mean_score,
                         "lower": 4.9, "upper": 5.1, "z": (mean_score - 5.0) / 0.03,
                         "drifted": not 4.9 <= mean_score <= 5.1, "status": "ok"},
        "outliers": {"rows": 2000, "count": outliers, "share": outliers / 2000,
                     "expected_share": 0.005, "threshold": 12.2, "p_value": 0.4 if outliers < 20
                     else 1e-9, "detected": outliers >= 20, "status": "ok",
                     "top": [{"request_id": "req-<b>7</b>", "row_index": 0, "score": 31.5,
                              "features": [{"name": "income", "contribution": 0.8}]}]},
        "attributions": {"field": "prediction.shap", "status": "alert" if attributions else "ok",
                         "drifted_features": list(attributions),
                         "features": {name: {"rows": 2000, "mean_abs": 0.9 if name in attributions
                                             else 0.2, "baseline_mean_abs": 0.2, "score": 0.3,
                                             "threshold": 0.1, "method": "jensenshannon",
                                             "drifted": name in attributions}
                                      for name in ("age", "income")}},
    }  # fmt: skip


def evaluation(*, degraded: bool = False, status: str | None = None) -> dict[str, Any]:
    accuracy = 0.71 if degraded else 0.9
    return {
        "status": status or ("degraded" if degraded else "ok"),
        "checked_at": (T0 + timedelta(seconds=next(_stamps))).isoformat(),
        "degraded": degraded,
        "reasons": ["accuracy 0.71 is below the baseline's 0.90 minus its 0.03 margin"]
        if degraded
        else [],
        "metrics": {"accuracy": accuracy, "rows": 800},
        "baseline": {"accuracy": 0.9, "rows": 10000},
    }


def healthy(i: int) -> dict[str, Any]:
    return {"health": health(i), "drift": drift(), "evaluation": evaluation()}


ANOMALY = {"feature": "age", "type": "type_mismatch", "share": 0.12, "detail": "strings"}
# rule -> (what breaks it at check i, text its alert must contain: by how much, against what)
CASES: dict[str, tuple[Callable[[int], dict[str, Any]], tuple[str, ...]]] = {
    "schema_skew": (lambda i: {"drift": drift(anomalies=(ANOMALY,))}, ("type_mismatch", "12.0%")),
    "feature_drift": (lambda i: {"drift": drift(features=("income",))}, ("1 of 3", "income")),
    "prediction_drift": (lambda i: {"drift": drift(predictions=("prediction",))}, ("1 of 1",)),
    "multivariate_drift": (lambda i: {"drift": drift(mean_score=5.4)}, ("5.4", "4.9 to 5.1")),
    "outlier_share": (lambda i: {"drift": drift(outliers=60)}, ("3.0%", "60 of 2000", "0.5%")),
    "attribution_drift": (
        lambda i: {"drift": drift(attributions=("income",))},
        ("1 of 2", "income", "0.9", "baseline 0.2"),
    ),
    "quality": (lambda i: {"evaluation": evaluation(degraded=True)}, ("accuracy 0.71",)),
    "error_rate": (lambda i: {"health": health(i, errors=80)}, ("8.0%", "80 of 1000", "5.0%")),
    "latency": (lambda i: {"health": health(i, p99=3500.0)}, ("p99", "3500 ms", "2000 ms")),
    "capture_drops": (lambda i: {"health": health(i, dropped_per_check=60)}, ("6.0%", "1.0%")),
    "memory": (lambda i: {"health": health(i, memory=96.5)}, ("96.5%", "90%")),
    "gpu_memory": (lambda i: {"health": health(i, gpu_used=78.5 * GIB)}, ("98.1%", "95%")),
}


def test_every_rule_has_a_case() -> None:
    assert set(CASES) == set(RULES)


def test_healthy_reports_raise_nothing() -> None:
    alerts = manager()
    for i in range(6):
        assert alerts.evaluate(**healthy(i), now=at(i)) == []
    assert alerts.active() == []


@pytest.mark.parametrize("rule", sorted(CASES))
def test_each_rule_fires_from_its_own_input_and_no_other(rule: str) -> None:
    breaks, says = CASES[rule]
    alerts = manager()
    assert alerts.evaluate(**healthy(0), now=at(0)) == []
    assert alerts.evaluate(**{**healthy(1), **breaks(1)}, now=at(1)) == []  # alert_for is 2
    events = alerts.evaluate(**{**healthy(2), **breaks(2)}, now=at(2))
    assert [(e["rule"], e["state"]) for e in events] == [(rule, "firing")]
    for text in says:
        assert text in events[0]["summary"] + " ".join(events[0]["details"])
    assert events[0]["since"] == at(1).isoformat(timespec="seconds")
    assert alerts.evaluate(**{**healthy(3), **breaks(3)}, now=at(3)) == []
    assert alerts.evaluate(**healthy(4), now=at(4)) == []
    resolved = alerts.evaluate(**healthy(5), now=at(5))
    assert [(e["rule"], e["state"], e["episode"]) for e in resolved] == [
        (rule, "resolved", events[0]["episode"])
    ]


@pytest.mark.parametrize(
    ("rule", "report"),
    [
        ("error_rate", {"health": health(count=10, errors=5)}),  # under alert_min_requests
        ("latency", {"health": health(count=10, p99=9000.0)}),
        ("error_rate", {"health": health(count=1000, errors=49)}),  # 4.9% < 5%
        ("latency", {"health": health(p99=2000.0)}),  # at the target is not over it
        ("memory", {"health": health(memory=89.9)}),
    ],
)
def test_just_below_a_threshold_stays_quiet(rule: str, report: dict[str, Any]) -> None:
    alerts = manager(alert_for=1)
    assert alerts.evaluate(**report, now=at(0)) == []


def test_thresholds_come_from_settings() -> None:
    alerts = manager(
        alert_for=1, alert_error_rate=0.2, alert_latency="5s", alert_latency_percentile="p95",
        alert_memory_percent=99, alert_gpu_memory_percent=99.5, alert_min_requests=5,
    )  # fmt: skip
    quiet = health(errors=150, p99=9000.0, memory=97.0, gpu_used=79 * GIB)
    assert alerts.evaluate(health=quiet, now=at(0)) == []
    loud = health(count=10, errors=3, memory=99.5)
    loud["latency_ms"]["p95"] = 5001.0
    fired = {e["rule"] for e in alerts.evaluate(health=loud, now=at(1))}
    assert fired == {"error_rate", "latency", "memory"}


def test_reports_that_cannot_tell_neither_fire_nor_resolve() -> None:
    alerts = manager()
    for i in range(3):
        events = alerts.evaluate(
            health=health(count=0, memory=None) | {"resources": {"cgroup": None, "gpus": []}},
            drift=drift(status="insufficient_data"),
            evaluation=evaluation(status="no_labels"),
            now=at(i),
        )
        assert events == []
    alerts.evaluate(drift=drift(features=("age",)), now=at(3))
    assert alerts.evaluate(drift=drift(features=("age",)), now=at(4))[0]["state"] == "firing"
    for i in range(5, 10):  # too few rows for a verdict: the episode stays open
        assert alerts.evaluate(drift=drift(status="insufficient_data"), now=at(i)) == []
    assert [a["rule"] for a in alerts.active()] == ["feature_drift"]
    alerts.evaluate(drift=drift(), now=at(10))
    assert alerts.evaluate(drift=drift(), now=at(11))[0]["state"] == "resolved"


def test_hysteresis_needs_consecutive_checks_both_ways() -> None:
    alerts = manager(alert_for=3)
    bad, good = {"features": ("age",)}, {}
    script = [bad, bad, good, bad, bad, bad, bad, good, good, bad, good, good, good]
    states = [[e["state"] for e in alerts.evaluate(drift=drift(**s), now=at(i))]
              for i, s in enumerate(script)]  # fmt: skip
    assert states == [[], [], [], [], [], ["firing"], [], [], [], [], [], [], ["resolved"]]


def test_one_episode_one_alert_even_as_it_worsens() -> None:
    alerts = manager()
    events = []
    spreading = [("age",), ("age",), ("age", "income"), ("age", "income", "city")]
    for i, features in enumerate(spreading):
        events += alerts.evaluate(drift=drift(features=features), now=at(i))
    assert [e["state"] for e in events] == ["firing"]
    assert alerts.active()[0]["current"].startswith("3 of 3 input features drifted")
    events = alerts.evaluate(drift=drift(), now=at(5)) + alerts.evaluate(drift=drift(), now=at(6))
    assert [e["state"] for e in events] == ["resolved"]
    assert events[0]["worst"].startswith("3 of 3 input features drifted")
    assert events[0]["duration_s"] == 6 * 60


def test_a_report_seen_before_is_not_counted_again() -> None:
    alerts = manager()
    report = drift(features=("age",))
    for i in range(4):  # the engine may hand the latest report to every round
        assert alerts.evaluate(drift=report, now=at(i)) == []
    copy = {**drift(features=("age",)), "checked_at": report["checked_at"]}
    assert alerts.evaluate(drift=copy, now=at(5)) == []
    assert alerts.evaluate(drift=drift(features=("age",)), now=at(6))[0]["state"] == "firing"


def test_cooldown_holds_back_a_new_episode_until_it_has_passed() -> None:
    alerts = manager(alert_for=1, alert_cooldown="10m")

    def step(minute: float, broken: bool) -> list[str]:
        report = health(errors=200 if broken else 0)
        return [e["state"] for e in alerts.evaluate(health=report, now=at(minute))]

    assert step(0, True) == ["firing"]
    assert step(1, False) == ["resolved"]  # quiet until minute 11
    assert step(2, True) == []  # held back, and never resolved since it never alerted
    assert step(3, False) == []
    assert step(5, True) == []
    assert step(10, True) == []
    assert step(11, True) == ["firing"]
    assert alerts.active()[0]["since"] == at(5).isoformat(timespec="seconds")
    held = {s.labels["rule"]: s.value for f in alerts.metrics() for s in f.samples
            if s.name == "inferwatch_alerts_suppressed_total"}  # fmt: skip
    assert held["error_rate"] == 2


def test_rules_can_be_turned_off() -> None:
    assert set(RULES) - {"gpu_memory", "latency"} == _enabled("-gpu_memory,-latency")
    assert _enabled("error_rate,quality") == {"error_rate", "quality"}
    assert _enabled("all,-quality") == set(RULES) - {"quality"}
    assert _enabled("none") == set()
    alerts = manager(alert_rules="-gpu_memory", alert_for=1)
    assert alerts.evaluate(health=health(gpu_used=80 * GIB), now=at(0)) == []


def _enabled(text: str) -> set[str]:
    chosen = AlertOptions.from_settings(Settings.load(environ={"INFERWATCH_ALERT_RULES": text}))
    alerts = AlertManager(chosen, channels=[])
    return {s.labels["rule"] for f in alerts.metrics() for s in f.samples
            if s.name == "inferwatch_alerts_active"}  # fmt: skip


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"alert_rules": "error_rate,latncy"}, "alert_rules"),
        ({"alert_latency_percentile": "p42"}, "alert_latency_percentile"),
        ({"alert_smtp_host": "mail", "alert_email_to": "a@x", "alert_smtp_tls": "ssl"}, "tls"),
        ({"alert_smtp_host": "mail.example.com"}, "alert_email_to"),
        ({"alert_email_to": "ops@example.com"}, "alert_email_to"),
        ({"alert_slack_url": "hooks.slack.com/services/T0/B0/token"}, "alert_slack_url"),
        ({"alert_teams_url": "file:/nonexistent/teams-url"}, "alert_teams_url"),
    ],
)
def test_a_bad_alert_setting_names_itself(values: dict[str, Any], named: str) -> None:
    with pytest.raises(MonitorError) as info:
        AlertManager(options(**values))
    assert named in str(info.value)
    assert "\n" not in str(info.value)
    assert "token" not in str(info.value)  # the bad URL is not echoed back


def test_history_and_active() -> None:
    alerts = manager(alert_for=1)
    alerts.evaluate(health=health(errors=100), now=at(0))
    alerts.evaluate(health=health(), drift=drift(features=("age",)), now=at(1))
    history = alerts.history()
    assert [(e["rule"], e["state"]) for e in history] == [
        ("error_rate", "resolved"), ("feature_drift", "firing"), ("error_rate", "firing"),
    ]  # fmt: skip
    assert [e["rule"] for e in alerts.history(since=at(0.5))] == ["error_rate", "feature_drift"]
    assert len(alerts.history(limit=1)) == 1
    assert [a["rule"] for a in alerts.active()] == ["feature_drift"]
    history[0]["summary"] = "changed by a caller"
    assert alerts.history()[0]["summary"] != "changed by a caller"


def test_links_and_source_come_from_settings() -> None:
    alerts = manager(alert_for=1, alert_base_url="https://ml.example.com/monitor/",
                     alert_source="fraud-model")  # fmt: skip
    event = alerts.evaluate(drift=drift(features=("age",)), now=at(0))[0]
    assert event["links"] == {
        "dashboard": "https://ml.example.com/monitor/dashboard",
        "drift": "https://ml.example.com/monitor/drift",
    }
    assert event["source"] == "fraud-model"


def test_rows_fit_the_table_and_restore_carries_an_episode_over_a_restart() -> None:
    db = duckdb.connect(":memory:")
    db.execute(ALERTS_DDL)
    rows: list[dict[str, Any]] = []
    first = AlertManager(options(), record=rows.append, channels=[])
    for i in range(3):
        first.evaluate(drift=drift(features=("age",)), now=at(i))
    first.close()
    columns = [c[0] for c in db.execute("DESCRIBE alerts").fetchall()]
    for row in rows:
        marks = ", ".join("?" for _ in row)
        db.execute(f"INSERT INTO alerts ({', '.join(row)}) VALUES ({marks})", list(row.values()))
    assert set(rows[0]) == set(columns)
    stored = db.execute("SELECT * FROM alerts ORDER BY ts").fetchall()
    restored_rows = [dict(zip(columns, values, strict=True)) for values in stored]

    second = AlertManager(options(), record=rows.append, channels=[])
    second.restore(restored_rows)
    assert [a["rule"] for a in second.active()] == ["feature_drift"]
    assert second.evaluate(drift=drift(features=("age",)), now=at(10)) == []  # no second alert
    second.evaluate(drift=drift(), now=at(11))
    resolved = second.evaluate(drift=drift(), now=at(12))
    assert [(e["state"], e["episode"]) for e in resolved] == [("resolved", rows[0]["episode"])]
    assert resolved[0]["since"] == at(0).isoformat(timespec="seconds")
    assert [e["state"] for e in second.history()] == ["resolved", "firing"]


class _Alerts(Collector):
    def __init__(self, alerts: AlertManager) -> None:
        self._alerts = alerts

    def collect(self) -> Iterator[Any]:
        return self._alerts.metrics()


def test_metrics_pass_promtool() -> None:
    promtool = require_tool("promtool")
    alerts = manager(alert_for=1)
    alerts.evaluate(health=health(errors=100), now=at(0))
    registry = CollectorRegistry()
    registry.register(_Alerts(alerts))
    text = generate_latest(registry)
    checked = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == b""
    assert b'inferwatch_alerts_total{rule="error_rate",state="firing"} 1.0' in text
    assert b'inferwatch_alerts_active{rule="error_rate"} 1.0' in text


def test_odd_reports_are_counted_not_raised() -> None:
    alerts = manager(alert_for=1)
    odd = {"features": ["not", "a", "mapping"], "schema_anomalies": "nope", "status": "alert"}
    assert alerts.evaluate(health={"requests": "?"}, drift=odd, now=at(0)) == []
    errors = {s.labels["rule"]: s.value for f in alerts.metrics() for s in f.samples
              if s.name == "inferwatch_alert_rule_errors_total"}  # fmt: skip
    assert errors["feature_drift"] == 1
    assert alerts.evaluate(health=health(errors=100), now=at(1))[0]["rule"] == "error_rate"
