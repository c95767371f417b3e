"""MLServer 1.x with mlserver-sklearn, behind the real sidecar, judged against a baseline built
from the training CSV with ``--prediction-column predict``."""

from __future__ import annotations

from pathlib import Path

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
)
from tests.servers._weather import FEATURES, weather
from tests.servers.conftest import mlserver
from tests.sidecar.conftest import sidecar_process

PATH = "/v2/models/weather/infer"
FLAGS = ("--check-interval", "1h", "--upstream-health-path", "/v2/health/ready")


def predictions(body: dict) -> list:
    (output,) = body["outputs"]
    assert (output["name"], output["shape"][1:], output["datatype"]) == ("predict", [1], "BYTES")
    return output["data"]


@pytest.fixture(scope="module")
def server(trained: dict) -> object:
    with mlserver(trained["folder"], trained["joblib"]) as running:
        yield running


def test_same_distribution_is_clean_and_labels_give_the_models_accuracy(
    trained: dict, server: object, tmp_path: Path
) -> None:
    baseline = build_baseline(trained["folder"] / "train.csv", tmp_path / "baseline.json")
    x, y = weather(600, seed=7)
    with sidecar_process(server.url, tmp_path, "--baseline", str(baseline), *FLAGS) as sidecar:
        rows = send(sidecar.url, PATH, x, oip_body, predictions)
        report = check_now(sidecar.admin, 24)
        assert report["status"] == "ok", report
        assert report["schema_anomalies"] == [] and report["drift_detected"] is False
        assert set(report["features"]) == set(FEATURES) and report["window"]["rows"] == 600
        assert report["prediction"]["predict"]["drifted"] is False
        mapping = report["mapping"]
        assert mapping["prediction"]["output"] == "predict"
        assert "baseline's prediction column" in mapping["prediction"]["reason"]
        assert mapping["inputs"]["method"] == "positional"
        post_labels(sidecar.admin, rows, y)
        quality = evaluation(sidecar.admin)
    served = [p for *_, p in rows]
    assert served == trained["model"].predict(x).tolist()
    assert quality["prediction_field"] == "predict" and quality["task"] == "classification"
    assert quality["metrics"]["accuracy"] == pytest.approx(accuracy_score(y, served), abs=1e-9)


def test_shifted_features_drift_and_only_those(
    trained: dict, server: object, tmp_path: Path
) -> None:
    baseline = build_baseline(trained["folder"] / "train.csv", tmp_path / "baseline.json")
    x, _ = weather(600, seed=8, shift={"temp_max": 9.0, "wind": 4.0})
    with sidecar_process(server.url, tmp_path, "--baseline", str(baseline), *FLAGS) as sidecar:
        send(sidecar.url, PATH, x, oip_body, predictions)
        report = check_now(sidecar.admin, 24)
    assert report["status"] == "alert" and report["drift_detected"] is True
    assert drifted_inputs(report) == {"temp_max", "wind"}
    assert not [a for a in report["schema_anomalies"] if a["type"] != "out_of_range"]
