"""The engine's skew checks end to end: baseline file, traffic through the middleware, /drift."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from inferwatch.middleware.baseline.build import build_baseline
from tests.apps.model_app import build_app
from tests.conftest import in_process, wait_until

pytestmark = pytest.mark.anyio


def write_training(path: Path, rows: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["age", "income", "plan"])
        for _ in range(rows):
            writer.writerow([rng.gauss(40, 10), rng.gauss(50_000, 8_000), rng.choice("abc")])


def instances(count: int, seed: int, *, age_shift: float = 0.0) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {"age": rng.gauss(40 + age_shift, 10), "income": rng.gauss(50_000, 8_000),
         "plan": rng.choice("abc")}
        for _ in range(count)
    ]  # fmt: skip


@pytest.fixture
def baseline_file(tmp_path: Path) -> Path:
    data = tmp_path / "train.csv"
    write_training(data, 5_000)
    out = tmp_path / "baseline.json"
    build_baseline(str(data), out=str(out))
    return out


async def post_all(client: httpx.AsyncClient, rows: list[dict[str, Any]]) -> None:
    for start in range(0, len(rows), 50):
        response = await client.post("/echo", json={"instances": rows[start : start + 50]})
        assert response.status_code == 200


async def test_drift_is_found_on_the_feature_that_moved(db_path: str, baseline_file: Path) -> None:
    app = in_process(build_app(monitor=False), db=db_path, baseline=str(baseline_file))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        await post_all(c, instances(1_000, seed=1, age_shift=15))
        assert app.engine.flush()
        report = (await c.post("/monitor/drift/check")).json()
        assert report["status"] == "alert"
        assert report["drifted_features"] == ["age"]
        assert report["features"]["income"]["drifted"] is False
        assert (await c.get("/monitor/drift")).json()["checked_at"] == report["checked_at"]
        assert app.engine.flush()
        history = (await c.get("/monitor/drift/history")).json()["reports"]
        assert [r["checked_at"] for r in history] == [report["checked_at"]]
        metrics = (await c.get("/monitor/metrics")).text
        assert 'inferwatch_drift_detected{feature="age",role="input"} 1.0' in metrics
        assert 'inferwatch_drift_status{status="alert"} 1.0' in metrics
    app.engine.stop()


async def test_unchanged_traffic_is_ok(db_path: str, baseline_file: Path) -> None:
    app = in_process(build_app(monitor=False), db=db_path, baseline=str(baseline_file))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        await post_all(c, instances(1_000, seed=2))
        assert app.engine.flush()
        report = (await c.post("/monitor/drift/check")).json()
    app.engine.stop()
    assert report["status"] == "ok", report["drifted_features"]
    assert report["schema_anomalies"] == []


async def test_a_check_reads_only_the_newest_max_window_rows(
    db_path: str, baseline_file: Path
) -> None:
    """Old unshifted traffic, then 300 shifted rows: a cap of 300 sees only the shift."""
    app = in_process(
        build_app(monitor=False), db=db_path, baseline=str(baseline_file), max_window_rows=300
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        await post_all(c, instances(2_000, seed=4))
        assert app.engine.flush()
        await post_all(c, instances(300, seed=5, age_shift=15))
        assert app.engine.flush()
        report = (await c.post("/monitor/drift/check")).json()
    app.engine.stop()
    assert report["window"]["capped"] is True
    assert report["window"]["requested_s"] == 3600.0
    assert report["window"]["rows"] == 300
    assert report["drifted_features"] == ["age"]


async def test_a_window_under_the_cap_is_whole(db_path: str, baseline_file: Path) -> None:
    app = in_process(build_app(monitor=False), db=db_path, baseline=str(baseline_file))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        await post_all(c, instances(500, seed=6))
        assert app.engine.flush()
        report = (await c.post("/monitor/drift/check")).json()
    app.engine.stop()
    assert report["window"]["capped"] is False
    assert "requested_s" not in report["window"]
    assert report["window"]["rows"] == 500


async def test_a_broken_new_baseline_keeps_the_last_good_one(
    db_path: str, baseline_file: Path
) -> None:
    app = in_process(build_app(monitor=False), db=db_path, baseline=str(baseline_file))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        await post_all(c, instances(300, seed=3))
        assert app.engine.flush()
        assert (await c.get("/monitor/readyz")).status_code == 200
        good = json.loads(baseline_file.read_text())
        baseline_file.write_text("{ not json")
        report = (await c.post("/monitor/drift/check")).json()
        assert report["status"] == "ok"  # still judged against the last good baseline
        assert "last good baseline stays in force" in report["baseline"]["error"]
        ready = await c.get("/monitor/readyz")
        assert ready.status_code == 503
        assert "baseline" in ready.json()["reasons"][0]
        good["features"].pop("plan")
        baseline_file.write_text(json.dumps(good))
        report = (await c.post("/monitor/drift/check")).json()
        assert "error" not in report["baseline"]
        assert "plan" not in report["features"]
        assert (await c.get("/monitor/readyz")).status_code == 200
    app.engine.stop()


async def test_check_needs_the_token_when_one_is_set(db_path: str, baseline_file: Path) -> None:
    app = in_process(
        build_app(monitor=False), db=db_path, baseline=str(baseline_file), admin_token="t0k"
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        assert (await c.post("/monitor/drift/check")).status_code == 401
        ok = await c.post("/monitor/drift/check", headers={"Authorization": "Bearer t0k"})
        assert ok.status_code == 200, ok.text
        assert ok.json()["status"] == "insufficient_data"
    app.engine.stop()


async def test_a_drift_alert_is_kept_in_the_store_and_served(
    db_path: str, baseline_file: Path
) -> None:
    app = in_process(build_app(monitor=False), db=db_path, baseline=str(baseline_file), alert_for=1)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        await post_all(c, instances(1_000, seed=4, age_shift=15))
        assert app.engine.flush()
        assert (await c.post("/monitor/drift/check")).json()["drift_detected"]
        answer = (await c.get("/monitor/alerts")).json()
        # a shift of 1.5 standard deviations also makes rows unusual, all features together
        fired = ["feature_drift", "multivariate_drift", "outlier_share"]
        assert sorted(event["rule"] for event in answer["active"]) == fired
        drift = next(e for e in answer["history"] if e["rule"] == "feature_drift")
        assert drift["state"] == "firing"
        assert "age" in drift["summary"]
        store = app.engine.writer.store
        assert store is not None
        wait_until(lambda: len(store.query("SELECT rule FROM alerts")) == 3, timeout=15)
        rows = store.query("SELECT rule, state FROM alerts ORDER BY rule")
        assert rows == [(rule, "firing") for rule in fired]
        metrics = (await c.get("/monitor/metrics")).text
        assert 'inferwatch_alerts_active{rule="feature_drift"} 1.0' in metrics
    app.engine.stop()


async def test_drift_history_of_one_model_holds_its_reports(
    db_path: str, baseline_file: Path
) -> None:
    pairs = f"alpha={baseline_file},beta={baseline_file}"
    app = in_process(build_app(monitor=False), db=db_path, baselines=pairs)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://m") as c:
        for query in ("?model=alpha", "?model=beta", "?model=beta", ""):
            assert (await c.post("/monitor/drift/check" + query)).status_code == 200
        assert app.engine.flush()
        assert app.engine.writer.call(lambda store: None).result(10) is None  # the inserts
        every = (await c.get("/monitor/drift/history")).json()["reports"]
        beta = (await c.get("/monitor/drift/history?model=beta")).json()["reports"]
        alpha = (await c.get("/monitor/drift/history?model=alpha&limit=5")).json()["reports"]
        unknown = await c.get("/monitor/drift/history?model=gamma")
    app.engine.stop()
    # the check over every request runs each model's too
    assert sorted(str(r.get("model")) for r in every) == ["None", *["alpha"] * 2, *["beta"] * 3]
    assert [r["model"] for r in beta] == ["beta"] * 3
    assert [r["model"] for r in alpha] == ["alpha"] * 2
    assert unknown.status_code == 404 and "gamma" in unknown.json()["error"]
