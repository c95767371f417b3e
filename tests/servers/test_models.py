"""Several models behind one MLServer: each has its own baseline, window, checks, evaluation and
metrics, told apart by the model name in the request path."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.metrics import accuracy_score

from tests.conftest import require_tool
from tests.servers._traffic import (
    build_baseline,
    drifted_inputs,
    oip_body,
    post_labels,
    send,
)
from tests.servers._weather import weather
from tests.servers.conftest import mlserver
from tests.sidecar.conftest import sidecar_process


def predictions(body: dict) -> list:
    return body["outputs"][0]["data"]


def test_each_model_is_checked_against_its_own_baseline(trained: dict, tmp_path: Path) -> None:
    folder = tmp_path / "baselines"
    folder.mkdir()
    build_baseline(trained["folder"] / "train.csv", folder / "weather.json")
    shutil.copy(folder / "weather.json", folder / "coast.json")
    calm, y = weather(400, seed=21)
    windy, _ = weather(400, seed=22, shift={"wind": 5.0})
    flags = ("--baselines", str(folder), "--check-interval", "1h")
    with (
        mlserver(trained["folder"], trained["joblib"], also=("coast",)) as server,
        sidecar_process(server.url, tmp_path, *flags) as sidecar,
    ):
        rows = send(sidecar.url, "/v2/models/weather/infer", calm, oip_body, predictions)
        send(sidecar.url, "/v2/models/coast/versions/1/infer", windy, oip_body, predictions)
        reports = {}
        for model in ("weather", "coast"):
            answer = httpx.post(f"{sidecar.admin}/drift/check?model={model}", timeout=60)
            assert answer.status_code == 200, answer.text
            reports[model] = answer.json()
        unknown = httpx.get(sidecar.admin + "/drift?model=nope", timeout=10)
        latest = httpx.get(sidecar.admin + "/drift?model=coast", timeout=10).json()
        post_labels(sidecar.admin, rows, y)
        quality = httpx.get(sidecar.admin + "/evaluation?model=weather", timeout=60).json()
        others = httpx.get(sidecar.admin + "/evaluation?model=coast", timeout=60).json()
        metrics = httpx.get(sidecar.admin + "/metrics", timeout=10).text
    weather_report, coast = reports["weather"], reports["coast"]
    assert weather_report["model"] == "weather" and coast["model"] == "coast"
    assert weather_report["window"]["rows"] == 400 and coast["window"]["rows"] == 400
    assert weather_report["status"] == "ok" and weather_report["schema_anomalies"] == []
    assert coast["mapping"]["inputs"] == {"method": "positional", "requests": {"positional": 16}}
    assert drifted_inputs(coast) == {"wind"} and coast["drift_detected"] is True
    assert latest["checked_at"] == coast["checked_at"]
    assert unknown.status_code == 404 and "nope" in unknown.json()["error"]
    served = [p for *_, p in rows]
    assert quality["model"] == "weather"
    assert quality["metrics"]["accuracy"] == pytest.approx(accuracy_score(y, served), abs=1e-9)
    assert others["status"] == "no_labels"
    drifted = {
        (s.labels["model"], s.labels["feature"]): s.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "inferwatch_drift_detected"
        for s in family.samples
        if s.labels["role"] == "input"
    }
    assert drifted[("coast", "wind")] == 1.0 and drifted[("weather", "wind")] == 0.0
    accuracy = {
        s.labels["model"]: s.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "inferwatch_evaluation_quality"
        for s in family.samples
        if s.labels["metric"] == "accuracy"
    }
    assert accuracy["weather"] == pytest.approx(quality["metrics"]["accuracy"])
    checked = subprocess.run(
        [require_tool("promtool"), "check", "metrics"],
        input=metrics.encode(), capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0 and not checked.stdout + checked.stderr, checked
