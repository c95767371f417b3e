"""KServe's Python model server (a custom ``kserve.Model``) behind the real sidecar, on its V1
``:predict`` and V2 ``/infer`` protocols."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from sklearn.metrics import accuracy_score

from tests.servers._traffic import (
    build_baseline,
    check_now,
    drifted_inputs,
    evaluation,
    oip_body,
    post_labels,
    send,
    v1_body,
)
from tests.servers._weather import FEATURES, weather
from tests.servers.conftest import kserve
from tests.sidecar.conftest import sidecar_process

V1 = "/v1/models/weather:predict"
V2 = "/v2/models/weather/infer"
FLAGS = ("--check-interval", "1h", "--upstream-health-path", "/v2/health/ready")


def v1_predictions(body: dict) -> list:
    return body["predictions"]


def v2_labels(body: dict) -> list:
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["probabilities"]["shape"][1] == 4
    return outputs["label"]["data"]


@pytest.fixture(scope="module")
def server(trained: dict) -> object:
    with kserve(trained["folder"], trained["joblib"]) as running:
        yield running


def test_v1_same_distribution_is_clean_and_labels_give_the_models_accuracy(
    trained: dict, server: object, tmp_path: Path
) -> None:
    baseline = build_baseline(trained["folder"] / "train.csv", tmp_path / "baseline.json")
    x, y = weather(500, seed=11)
    with sidecar_process(server.url, tmp_path, "--baseline", str(baseline), *FLAGS) as sidecar:
        rows = send(sidecar.url, V1, x, v1_body, v1_predictions)
        report = check_now(sidecar.admin)
        assert report["status"] == "ok", report
        assert report["schema_anomalies"] == [] and report["drift_detected"] is False
        assert set(report["features"]) == set(FEATURES) and report["window"]["rows"] == 500
        found = report["mapping"]["prediction"]
        assert (found["output"], found["reason"]) == ("prediction", "the only output")
        assert report["prediction"]["predict"]["drifted"] is False
        assert report["mapping"]["inputs"]["method"] == "positional"
        post_labels(sidecar.admin, rows, y)
        quality = evaluation(sidecar.admin)
    served = [p for *_, p in rows]
    assert served == trained["model"].predict(x).tolist()
    assert quality["prediction_field"] == "prediction"
    assert quality["metrics"]["accuracy"] == pytest.approx(accuracy_score(y, served), abs=1e-9)


def test_v2_two_outputs_take_the_labels_and_shifted_features_drift(
    trained: dict, server: object, tmp_path: Path
) -> None:
    baseline = build_baseline(trained["folder"] / "train.csv", tmp_path / "baseline.json")
    x, y = weather(500, seed=12, shift={"precipitation": 6.0})
    with sidecar_process(server.url, tmp_path, "--baseline", str(baseline), *FLAGS) as sidecar:
        rows = send(sidecar.url, V2, x, oip_body, v2_labels)
        report = check_now(sidecar.admin)
        post_labels(sidecar.admin, rows, y)
        quality = evaluation(sidecar.admin)
    assert drifted_inputs(report) == {"precipitation"} and report["drift_detected"] is True
    found = report["mapping"]["prediction"]
    assert found["output"] == "label" and "prediction's name" in found["reason"]
    assert quality["prediction_field"] == "label"
    assert quality["probability_field"] == "probabilities[*]"
    served = [p for *_, p in rows]
    assert quality["metrics"]["accuracy"] == pytest.approx(accuracy_score(y, served), abs=1e-9)


def test_the_sidecar_sets_x_request_id_that_kserve_does_not_pass_through(
    server: object, tmp_path: Path
) -> None:
    body = v1_body(weather(2, seed=3)[0])
    direct = httpx.post(server.url + V1, json=body, headers={"X-Request-ID": "abc"}, timeout=10)
    assert direct.status_code == 200 and "x-request-id" not in direct.headers
    with sidecar_process(server.url, tmp_path, *FLAGS) as sidecar:
        sent = httpx.post(sidecar.url + V1, json=body, headers={"X-Request-ID": "abc"}, timeout=10)
        made = httpx.post(sidecar.url + V1, json=body, timeout=10)
    assert sent.headers["x-request-id"] == "abc"
    assert made.headers["x-request-id"] and made.headers["x-request-id"] != "abc"
