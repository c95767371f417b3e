"""examples/mlserver: the files a user copies, run as its README says."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from inferwatch.middleware.settings import Settings
from tests.conftest import ROOT, free_port
from tests.servers._traffic import check_now, oip_body, send
from tests.servers.conftest import running, server_python
from tests.sidecar.conftest import sidecar_process

EXAMPLE = ROOT / "examples" / "mlserver"


def test_committed_baseline_is_built_from_the_training_csv(tmp_path: Path) -> None:
    out = tmp_path / "baseline.json"
    subprocess.run(
        [sys.executable, "-m", "inferwatch", "baseline", "build", str(EXAMPLE / "train.csv"),
         "--out", str(out), "--label-column", "weather", "--prediction-column", "predict"],
        cwd=ROOT, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    committed = json.loads((EXAMPLE / "baseline.json").read_text())
    rebuilt = json.loads(out.read_text())
    for key in ("rows", "columns", "features", "predictions", "label", "quality"):
        assert committed[key] == rebuilt[key], key
    assert committed["columns"] == ["precipitation", "temp_max", "temp_min", "wind"]
    assert list(committed["predictions"]) == ["predict"]


def test_training_script_reproduces_the_committed_data(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), "--out", str(tmp_path)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    made, committed = (
        list(csv.reader(p.read_text().splitlines()))
        for p in (tmp_path / "train.csv", EXAMPLE / "train.csv")
    )
    assert [r[:-1] for r in made] == [r[:-1] for r in committed]  # the data: from the seed
    # the model's predictions: the same but for a scikit-learn release that fits otherwise
    same = sum(a[-1] == b[-1] for a, b in zip(made, committed, strict=True))
    assert same >= 0.99 * len(made)
    assert (tmp_path / "models" / "weather" / "model.joblib").stat().st_size > 0


def test_manifest_names_real_settings_and_consistent_ports() -> None:
    deployment, service = yaml.safe_load_all((EXAMPLE / "kubernetes.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    (sidecar,) = pod["initContainers"]
    assert sidecar["restartPolicy"] == "Always"
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    fields = {f"INFERWATCH_{name.upper()}" for name in Settings.__dataclass_fields__}
    assert set(env) <= fields, set(env) - fields
    Settings.load({}, environ={k: v for k, v in env.items() if v is not None})  # values parse
    model_env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
    assert env["INFERWATCH_UPSTREAM"] == f"http://127.0.0.1:{model_env['MLSERVER_HTTP_PORT']}"
    ports = {p["name"]: p["containerPort"] for p in sidecar["ports"]}
    assert ports == {
        "http": int(env["INFERWATCH_PORT"]),
        "monitor": int(env["INFERWATCH_ADMIN_PORT"]),
    }
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http", "monitor"}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == env["INFERWATCH_ADMIN_PORT"]


def test_example_serves_behind_the_sidecar_with_its_baseline(tmp_path: Path) -> None:
    python = server_python("mlserver")
    subprocess.run(
        [sys.executable, str(EXAMPLE / "train.py"), "--out", str(tmp_path)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    shutil.copy(EXAMPLE / "models" / "weather" / "model-settings.json",
                tmp_path / "models" / "weather")  # fmt: skip
    settings = json.loads((EXAMPLE / "settings.json").read_text())
    settings |= {"http_port": free_port(), "grpc_port": free_port()}  # free ones for the test
    (tmp_path / "settings.json").write_text(json.dumps(settings))
    url = f"http://127.0.0.1:{settings['http_port']}"
    with open(EXAMPLE / "train.csv") as handle:
        rows = list(csv.DictReader(handle))[::10]  # 300 days the model was trained on
    x = np.array([[float(r[k]) for k in ("precipitation", "temp_max", "temp_min", "wind")]
                  for r in rows])  # fmt: skip
    command = [str(python.parent / "mlserver"), "start", str(tmp_path)]
    flags = ("--baseline", str(EXAMPLE / "baseline.json"), "--check-interval", "1h",
             "--upstream-health-path", "/v2/health/ready")  # fmt: skip
    with (
        running(command, url, "/v2/models/weather/ready", tmp_path / "mlserver.log") as server,
        sidecar_process(server.url, tmp_path, *flags) as sidecar,
    ):
        answers = send(sidecar.url, "/v2/models/weather/infer", x, oip_body,
                       lambda body: body["outputs"][0]["data"])  # fmt: skip
        report = check_now(sidecar.admin)
    assert [p for *_, p in answers] == [r["predict"] for r in rows]
    assert report["status"] == "ok" and report["schema_anomalies"] == [], report
    assert report["mapping"]["prediction"]["output"] == "predict"
    assert report["mapping"]["inputs"]["method"] == "positional"
