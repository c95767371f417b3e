"""The demo, run as a user runs it: each phase's trouble is detected and reported."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, free_port


def test_demo_detects_every_phase() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sidecar", "demo", "--duration", "50s", "--port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"summary: (\S+summary\.json)", result.stdout)
    assert match, result.stdout
    summary = json.loads(Path(match.group(1)).read_text())
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
