"""/drift?window=&against= and /drift/history?window= through a real server: the model app on
uvicorn, its collector folding what it stores, httpx as the client."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx

from inferwatch.middleware.baseline.build import build_baseline
from tests.conftest import uvicorn_process, wait_until
from tests.middleware.drift.test_checks import instances, write_training


def _span(report: dict) -> float:
    window = report["window"]
    start, end = (
        datetime.fromisoformat(window[k].replace("Z", "+00:00")) for k in ("start", "end")
    )
    return (end - start).total_seconds()


def test_windows_and_comparisons_through_the_api(tmp_path: Path) -> None:
    write_training(tmp_path / "train.csv", 3_000)
    build_baseline(str(tmp_path / "train.csv"), out=str(tmp_path / "baseline.json"))
    env = {
        "INFERWATCH_DB": str(tmp_path / "monitor.duckdb"),
        "INFERWATCH_BASELINE": str(tmp_path / "baseline.json"),
        "INFERWATCH_FLUSH_INTERVAL": "0.1s",
        "INFERWATCH_MIN_ROWS": "50",
    }
    rows = instances(600, seed=3, age_shift=15)
    server = uvicorn_process("tests.apps.model_app:app", env=env)
    with server as (_, url), httpx.Client(base_url=url + "/monitor", timeout=60) as client:
        for first in range(0, len(rows), 50):
            client.post(url + "/echo", json={"instances": rows[first : first + 50]})
        wait_until(lambda: client.get("/health").json()["capture"]["stored"] >= 12)
        latest = client.post("/drift/check").json()
        assert latest["drifted_features"] == ["age"]

        day = client.get("/drift", params={"window": "24h"})
        assert day.status_code == 200, day.text
        report = day.json()
        assert 86_400 <= _span(report) < 86_400 + 60
        assert report["window"]["rows"] == 600 and report["drifted_features"] == ["age"]
        assert report["window"]["source"] in ("summaries", "rows")

        week = client.post("/drift/check", params={"window": "7d", "against": "1d-ago"})
        assert week.status_code == 200, week.text
        earlier = week.json()["against"]
        assert (earlier["rows"], earlier["compared"]) == (0, False)

        for bad in ({"window": "soon"}, {"window": "0s"}, {"against": "yesterday"}):
            answer = client.get("/drift", params=bad)
            assert answer.status_code == 400 and "error" in answer.json()

        # the latest periodic report stays the one kept; asked windows are not kept
        assert client.get("/drift").json()["checked_at"] == latest["checked_at"]
        history = client.get("/drift/history", params={"window": "1d"}).json()["reports"]
        assert [r["checked_at"] for r in history] == [latest["checked_at"]]
        assert client.get("/drift/history", params={"window": "x"}).status_code == 400
