"""MLServer 1.x with mlserver-sklearn, behind the real sidecar, judged against a baseline built
from the training CSV with ``--prediction-column predict``."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score

from tests.conftest import ROOT
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
        report = check_now(sidecar.admin)
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
        report = check_now(sidecar.admin)
    assert report["status"] == "alert" and report["drift_detected"] is True
    assert drifted_inputs(report) == {"temp_max", "wind"}
    assert not [a for a in report["schema_anomalies"] if a["type"] != "out_of_range"]


def test_metadata_and_datatypes_pick_the_labels_among_two_outputs(
    trained: dict, tmp_path: Path
) -> None:
    """A baseline whose prediction column is named unlike any output: the class labels are
    taken over the probabilities, and the metadata MLServer serves is read and reported."""
    train = (trained["folder"] / "train.csv").read_text().replace(",predict\n", ",guess\n", 1)
    (tmp_path / "renamed.csv").write_text(train)
    baseline = tmp_path / "baseline.json"
    subprocess.run(
        [sys.executable, "-m", "inferwatch", "baseline", "build", str(tmp_path / "renamed.csv"),
         "--out", str(baseline), "--label-column", "weather", "--prediction-column", "guess"],
        cwd=ROOT, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    declared = [
        {"name": "predict", "datatype": "BYTES", "shape": [-1, 1]},
        {"name": "predict_proba", "datatype": "FP64", "shape": [-1, 4]},
    ]
    x, y = weather(300, seed=9)

    def both(chunk: np.ndarray) -> dict:
        return oip_body(chunk) | {"outputs": [{"name": "predict"}, {"name": "predict_proba"}]}

    def labels(body: dict) -> list:
        outputs = {o["name"]: o for o in body["outputs"]}
        assert outputs["predict_proba"]["shape"] == [25, 4]
        return outputs["predict"]["data"]

    folder = trained["folder"]
    with (
        mlserver(folder, trained["joblib"], outputs=declared) as server,
        sidecar_process(server.url, tmp_path, "--baseline", str(baseline), *FLAGS) as sidecar,
    ):
        rows = send(sidecar.url, PATH, x, both, labels)
        report = check_now(sidecar.admin)
        deadline = time.monotonic() + 20
        while report["mapping"]["metadata"] is None and time.monotonic() < deadline:
            time.sleep(0.1)
            report = check_now(sidecar.admin)
        post_labels(sidecar.admin, rows, y)
        quality = evaluation(sidecar.admin)
    metadata = report["mapping"]["metadata"]
    assert metadata["model"] == "weather" and metadata["protocol"] == "v2"
    assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == [
        ("predict", "BYTES"),
        ("predict_proba", "FP64"),
    ]
    found = report["mapping"]["prediction"]
    assert found["output"] == "predict" and "class labels" in found["reason"], found
    assert report["prediction"]["guess"]["drifted"] is False
    assert report["schema_anomalies"] == [] and report["status"] == "ok"
    assert quality["prediction_field"] == "predict"
    assert quality["probability_field"] == "predict_proba[*]"
    served = [p for *_, p in rows]
    assert quality["metrics"]["accuracy"] == pytest.approx(accuracy_score(y, served), abs=1e-9)
