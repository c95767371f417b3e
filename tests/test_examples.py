"""The examples users copy: the FastAPI app, Prometheus config, alert rules and Grafana dashboard.

Every metric name the rules and the dashboard use must be one inferwatch exposes, checked
against a real scrape of the example app; every expression must parse (promtool).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from inferwatch.middleware.engine.metrics import EngineCollector
from tests.conftest import ROOT, require_tool, uvicorn_process

FASTAPI = ROOT / "examples" / "fastapi"
PROMETHEUS = ROOT / "examples" / "prometheus"
DASHBOARD = ROOT / "examples" / "grafana" / "inferwatch.json"
PREDICT = "/v1/models/churn:predict"
METRIC_NAME = re.compile(r"\binferwatch_[a-zA-Z0-9_]+")
# Grafana's variables, replaced by values promtool accepts.
GRAFANA_VARIABLES = {
    "$__rate_interval": "5m",
    "$__interval": "1m",
    "$__range": "1h",
    "$job": "inferwatch-sidecar",
    "$instance": "model-0:8001",
    "$route": "/predict",
}


def _promtool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _assert_clean(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output


def _rule_exprs() -> list[str]:
    doc = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    return [rule["expr"] for group in doc["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _grafana_exprs() -> list[str]:
    return [
        target["expr"]
        for panel in _panels(_dashboard()["panels"])
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def _grafana_variable_queries() -> list[str]:
    return [
        var["definition"] for var in _dashboard()["templating"]["list"] if var["type"] == "query"
    ]


def _substitute(expr: str) -> str:
    for name in sorted(GRAFANA_VARIABLES, key=len, reverse=True):
        expr = expr.replace(name, GRAFANA_VARIABLES[name])
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def test_alert_rules_pass_promtool_check() -> None:
    _assert_clean(_promtool("check", "rules", "examples/prometheus/rules.yml"))


def test_alert_rules_unit_tests_pass() -> None:
    result = _promtool("test", "rules", "examples/prometheus/rules.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_severity_for_and_annotations() -> None:
    doc = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    tested = (PROMETHEUS / "rules.test.yml").read_text()
    for group in doc["groups"]:
        for rule in group["rules"]:
            name = rule["alert"]
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
            assert {"summary", "description"} <= set(rule["annotations"]), name
            assert f"alertname: {name}\n" in tested, f"{name} has no unit test"
            # Only a one-off event (an OOM kill) may fire without a for: duration.
            assert "for" in rule or "increase(" in rule["expr"], name


def test_prometheus_config_passes_promtool_check(tmp_path: Path) -> None:
    result = _promtool("check", "config", "examples/prometheus/prometheus.yml")
    output = result.stdout + result.stderr
    if "field kubernetes_sd_configs not found" in output:
        # Debian's prometheus package is built without Kubernetes discovery. Check everything
        # else, the pod job's relabelling included, with its discovery swapped for a static list.
        config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
        pods = [job for job in config["scrape_configs"] if "kubernetes_sd_configs" in job]
        assert [job["job_name"] for job in pods] == ["inferwatch-pods"]
        for job in pods:
            assert job.pop("kubernetes_sd_configs") == [{"role": "pod"}]
            job["static_configs"] = [{"targets": ["pod:8001"]}]
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        (tmp_path / "rules.yml").write_text((PROMETHEUS / "rules.yml").read_text())
        result = _promtool("check", "config", "prometheus.yml", cwd=tmp_path)
    _assert_clean(result)
    assert "rules.yml" in result.stdout + result.stderr


def test_prometheus_config_scrapes_sidecar_middleware_and_annotated_pods() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["inferwatch-sidecar"]["static_configs"][0]["targets"] == ["model-host:8001"]
    assert jobs["inferwatch-middleware"]["metrics_path"] == "/monitor/metrics"
    relabel = jobs["inferwatch-pods"]["relabel_configs"]
    sources = {label for rule in relabel for label in rule.get("source_labels", [])}
    for annotation in ("scrape", "port", "path", "scheme"):
        assert f"__meta_kubernetes_pod_annotation_prometheus_io_{annotation}" in sources
    assert config["rule_files"] == ["rules.yml"]


def test_grafana_dashboard_is_well_formed() -> None:
    dashboard = _dashboard()
    assert 36 <= dashboard["schemaVersion"] <= 41
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["route"]["type"] == "query"
    ids = []
    for panel in _panels(dashboard["panels"]):
        ids.append(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    assert len(ids) == len(set(ids))
    exprs = " ".join(_grafana_exprs())
    assert 'route=~"$route"' in exprs
    assert "$__rate_interval" in exprs


def test_grafana_exprs_are_valid_promql(tmp_path: Path) -> None:
    exprs = _grafana_exprs()
    assert len(exprs) > 30
    rules = {
        "groups": [
            {
                "name": "grafana",
                "rules": [
                    {"record": f"grafana_expr_{i}", "expr": _substitute(expr)}
                    for i, expr in enumerate(exprs)
                ],
            }
        ]
    }
    (tmp_path / "grafana.rules.yml").write_text(yaml.safe_dump(rules))
    result = _promtool("check", "rules", "grafana.rules.yml", cwd=tmp_path)
    _assert_clean(result)
    assert f"{len(exprs)} rules found" in result.stdout


def _families(text: str) -> set[str]:
    """The series names an exposition holds: x_total for a counter, x_bucket... for a histogram."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def _hardware_families() -> set[str]:
    """Families that need a cgroup v2 limit or an NVIDIA GPU, from the real collector.

    A test machine may have neither, so the resource collector is fed one sample with both.
    """
    sample = {
        "process": {"cpu_percent": 12.0, "rss_bytes": 1 << 30},
        "system": {"cpu_percent": 30.0, "memory_available_bytes": 1 << 33},
        "cgroup": {
            "memory_current_bytes": 1 << 30,
            "memory_max_bytes": 1 << 31,
            "cpu_limit_cores": 2.0,
            "throttled_seconds": 1.5,
            "memory_oom_kills": 0,
        },
        "gpus": [
            {
                "index": 0,
                "name": "NVIDIA H100 80GB HBM3",
                "utilization_percent": 50,
                "memory_used_bytes": 1 << 34,
                "memory_total_bytes": 80 << 30,
                "temperature_c": 60,
                "power_watts": 300.0,
                "process_memory_bytes": 1 << 33,
            }
        ],
    }

    class Resources(Collector):
        def collect(self):  # type: ignore[no-untyped-def]
            return EngineCollector._resources(None, sample)  # type: ignore[arg-type]

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Resources())
    return _families(generate_latest(registry).decode())


@pytest.fixture(scope="module")
def example_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The FastAPI example in a real uvicorn process, with its committed baseline."""
    db = tmp_path_factory.mktemp("example") / "monitor.duckdb"
    env = {"INFERWATCH_DB": str(db), "INFERWATCH_CHECK_INTERVAL": "1h"}
    for name in ("INFERWATCH_BASELINE", "INFERWATCH_SAMPLE_RATE", "INFERWATCH_API_PREFIX"):
        env[name] = ""
    with uvicorn_process("examples.fastapi.app:app", env=env) as (_, url):
        yield url


def _customer(**changes: Any) -> dict[str, Any]:
    row = {"tenure_months": 3, "monthly_charges": 89.5, "support_calls": 4}
    return {**row, "contract": "month-to-month", **changes}


def test_fastapi_example_serves_predictions_and_health(example_app: str) -> None:
    with httpx.Client(base_url=example_app, timeout=10) as client:
        response = client.post(
            PREDICT,
            json={"instances": [_customer(), _customer(tenure_months=60, contract="two-year")]},
        )
        assert response.status_code == 200
        body = response.json()
        assert body["predictions"] == ["churn", "stay"]
        assert 0.5 < body["probabilities"][0] < 1 and body["probabilities"][1] < 0.5
        assert response.headers["x-request-id"]
        assert client.post(PREDICT, json={"instances": [{"contract": "one-year"}]}).status_code == (
            422
        )

        health = client.get("/monitor/health")
        assert health.status_code == 200
        assert health.json()["status"] in {"ok", "degraded", "failing"}
        assert health.json()["requests"]["count"] >= 1
        assert client.get("/monitor/readyz").status_code == 200
        drift = client.get("/monitor/drift").json()
        assert drift["status"] != "no_baseline"
        assert drift["baseline"]["rows"] == 400


def test_every_metric_name_used_is_exposed(example_app: str) -> None:
    with httpx.Client(base_url=example_app, timeout=10) as client:
        for i in range(5):
            response = client.post(
                PREDICT,
                json={"instances": [_customer(support_calls=i)]},
                headers={"X-Request-ID": f"example-{i}"},
            )
            assert response.status_code == 200
        # A contract type the model's encoder never saw: a 5xx, and a schema anomaly.
        failed = client.post(PREDICT, json={"instances": [_customer(contract="weekly")]})
        assert failed.status_code == 500
        labels = [{"request_id": f"example-{i}", "label": "churn"} for i in range(5)]
        assert client.post("/monitor/labels", json=labels).json()["accepted"] == 5
        assert client.get("/monitor/evaluation").status_code == 200
        assert client.post("/monitor/drift/check").status_code == 200
        scrape = client.get("/monitor/metrics")
    assert scrape.status_code == 200
    assert re.search(r'inferwatch_requests_total\{[^}]*code="5xx"[^}]*\} 1\.0', scrape.text)

    exposed = _families(scrape.text) | _hardware_families()
    used: dict[str, set[str]] = {
        "rules.yml": {m for expr in _rule_exprs() for m in METRIC_NAME.findall(expr)},
        "inferwatch.json": {
            m
            for expr in _grafana_exprs() + _grafana_variable_queries()
            for m in METRIC_NAME.findall(expr)
        },
    }
    for source, names in used.items():
        assert names, source
        assert not names - exposed, f"{source} uses names inferwatch does not expose"
    # Every family on the brief's list is used by the rules.
    for name in (
        "inferwatch_requests_total",
        "inferwatch_request_duration_seconds_bucket",
        "inferwatch_capture_dropped_total",
        "inferwatch_drift_detected",
        "inferwatch_schema_anomalies",
        "inferwatch_evaluation_degraded",
        "inferwatch_health_status",
        "inferwatch_cgroup_memory_max_bytes",
        "inferwatch_gpu_memory_total_bytes",
    ):
        assert name in used["rules.yml"], name


def test_committed_baseline_is_built_from_the_reference_csv(tmp_path: Path) -> None:
    out = tmp_path / "baseline.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "inferwatch",
            "baseline",
            "build",
            "examples/fastapi/reference.csv",
            "--out",
            str(out),
            "--label-column",
            "churned",
            "--prediction-column",
            "prediction",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=60,
    )
    committed = json.loads((FASTAPI / "baseline.json").read_text())
    rebuilt = json.loads(out.read_text())
    for key in ("rows", "columns", "features", "predictions", "label", "quality"):
        assert committed[key] == rebuilt[key], key


def test_the_service_monitor_scrapes_the_example_services_monitor_port() -> None:
    folder = ROOT / "examples" / "kubernetes"
    documents = list(yaml.safe_load_all((folder / "deployment.yaml").read_text()))
    service = next(d for d in documents if d["kind"] == "Service")
    monitor = yaml.safe_load((folder / "servicemonitor.yaml").read_text())
    assert monitor["kind"] == "ServiceMonitor"
    wanted = monitor["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= service["metadata"]["labels"].items()
    (endpoint,) = monitor["spec"]["endpoints"]
    port = next(p for p in service["spec"]["ports"] if p["name"] == endpoint["port"])
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    (sidecar,) = deployment["spec"]["template"]["spec"]["initContainers"]
    admin = next(p for p in sidecar["ports"] if p["name"] == port["targetPort"])
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert str(admin["containerPort"]) == env["INFERWATCH_ADMIN_PORT"]
    assert endpoint["path"] == "/metrics"
