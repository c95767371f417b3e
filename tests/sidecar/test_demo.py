"""The demo, run as a user runs it: each phase's trouble is detected and reported."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT, free_port


def test_demo_detects_every_phase() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "inferwatch", "demo", "--duration", "50s", "--keep",
         "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"summary: (\S+summary\.json)", result.stdout)
    assert match, result.stdout
    summary = json.loads(Path(match.group(1)).read_text())
    shutil.rmtree(Path(match.group(1)).parent)
    phases = summary["phases"]

    assert phases["normal"]["drift"]["status"] == "ok"
    assert phases["normal"]["drift"]["schema_anomalies"] == []

    drift = phases["drift"]["drift"]
    assert drift["drift_detected"]
    shifted = {"mean_radius", "mean_perimeter", "mean_area", "worst_radius", "worst_area"}
    flagged = set(drift["drifted_features"])
    assert flagged <= shifted  # only features that moved
    assert len(flagged) >= 3

    kinds = {(a["type"], a["feature"]) for a in phases["schema"]["drift"]["schema_anomalies"]}
    assert ("missing_feature", "mean_texture") in kinds
    assert ("unexpected_feature", "texture_mean") in kinds
    assert ("type_mismatch", "mean_smoothness") in kinds

    errors = phases["errors"]["health"]
    assert errors["status"] == "failing"
    assert errors["requests"]["error_rate"] > 0.2

    assert summary["labels"]["matched"] == summary["labels"]["accepted"] > 0
    evaluation = summary["evaluation"]
    assert evaluation["status"] == "degraded"
    assert evaluation["degraded"] is True

    fired = {event["rule"] for event in summary["alerts"]["history"]}
    assert {"feature_drift", "schema_skew", "error_rate"} <= fired
    for line in ("[1/5] normal", "[5/5] concept", "evaluation degraded", "dashboard: http"):
        assert line in result.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_demo_stops_its_children_and_removes_its_folder(signum: int) -> None:
    demo = subprocess.Popen(
        [sys.executable, "-m", "inferwatch", "demo", "--port", str(free_port())],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        started = ""
        for line in demo.stdout:
            started += line
            if line.startswith("inferwatch demo:"):
                break
        match = re.search(r"files in (\S+)", started)
        assert match, started
        folder = Path(match.group(1))
        children = psutil.Process(demo.pid).children()
        assert len(children) == 2 and folder.is_dir()
        demo.send_signal(signum)
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    assert demo.returncode == 0, started + rest
    assert not any(child.is_running() for child in children)
    assert not folder.exists()
