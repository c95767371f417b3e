"""``sidecar_collector``: the sidecar's engine in a collector process beside the proxy (the
default), or in the proxy's own process.

Real processes on 127.0.0.1: the test model server, the sidecar, the collector it starts.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import psutil
import pytest

from inferwatch.middleware.collector import CollectorPaths
from inferwatch.middleware.collector.election import collector_running
from tests.conftest import ROOT

from .conftest import ModelServer, sidecar_process, start_model_server, wait_until

V1 = {"instances": [{"a": 1, "b": 2.5}, {"a": 2, "b": 5.0}]}
COLLECTOR = ("--sidecar-collector", "true", "--sample-rate", "1.0")


def _collector_pid(admin: str) -> int | None:
    """The collector's pid, as its /health says; None while none answers."""
    response = httpx.get(admin + "/health", timeout=10)
    if response.status_code != 200:
        return None
    return response.json()["resources"]["collector"]["pid"]


def test_the_collector_serves_the_api_and_the_proxy_keeps_the_upstream(
    model: ModelServer, tmp_path: Path
) -> None:
    with sidecar_process(model.url, tmp_path, *COLLECTOR) as sidecar:
        assert httpx.get(sidecar.admin + "/readyz", timeout=10).json() == {"status": "ready"}
        with httpx.Client(base_url=sidecar.url, timeout=10) as client:
            for i in range(200):
                response = client.post(
                    "/v1/models/m:predict", json=V1, headers={"x-request-id": f"c-{i}"}
                )
                assert response.status_code == 200
        collector = _collector_pid(sidecar.admin)
        assert collector is not None and psutil.pid_exists(collector)
        assert collector != sidecar.process.pid
        # Read your writes: every response already sent is counted, and stored.
        health = httpx.get(sidecar.admin + "/health", timeout=10).json()
        assert health["requests"]["count"] == 200
        assert health["capture"]["stored"] == 200
        assert health["capture"]["workers"] == 1
        assert health["upstream"]["ready"] is True
        assert health["upstream"]["connections"]["opened"] >= 1
        workers = health["resources"]["workers"]
        assert [w["pid"] for w in workers] == [sidecar.process.pid]
        metrics = httpx.get(sidecar.admin + "/metrics", timeout=10)
        assert metrics.headers["content-length"] == str(len(metrics.content))
        text = metrics.text
        assert "inferwatch_upstream_up 1.0" in text
        assert 'inferwatch_upstream_connections{state="idle"}' in text
        assert "inferwatch_capture_stored_total 200.0" in text
        promtool = shutil.which("promtool")
        if promtool is not None:
            checked = subprocess.run(
                [promtool, "check", "metrics"], input=metrics.content, capture_output=True
            )
            assert checked.returncode == 0, checked.stdout + checked.stderr
        assert sidecar.terminate() == 0
    # The sidecar exits once its collector has written everything and let the store go.
    assert not collector_running(CollectorPaths.for_db(sidecar.db))
    ids = {row["request_id"] for row in sidecar.rows()}
    assert ids == {f"c-{i}" for i in range(200)}


def test_readyz_says_why_the_upstream_is_not_ready(tmp_path: Path) -> None:
    model = start_model_server(env={"UPSTREAM_READY": "0"})
    try:
        with sidecar_process(model.url, tmp_path, *COLLECTOR) as sidecar:
            response = httpx.get(sidecar.admin + "/readyz", timeout=10)
            assert response.status_code == 503
            reasons = response.json()["reasons"]
            assert any("answered 503" in reason for reason in reasons), reasons
            # The collector itself is ready: /health answers, with the upstream's section.
            health = httpx.get(sidecar.admin + "/health", timeout=10).json()
            assert health["upstream"]["ready"] is False
    finally:
        model.stop()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_traffic_flows_while_the_collector_is_killed(model: ModelServer, tmp_path: Path) -> None:
    with sidecar_process(model.url, tmp_path, *COLLECTOR) as sidecar:
        with httpx.Client(base_url=sidecar.url, timeout=10) as client:
            for _ in range(50):
                assert client.post("/v1/models/m:predict", json=V1).status_code == 200
            old = _collector_pid(sidecar.admin)
            assert old is not None
            os.kill(old, signal.SIGKILL)
            for _ in range(200):
                assert client.post("/v1/models/m:predict", json=V1).status_code == 200
        wait_until(lambda: _collector_pid(sidecar.admin) not in (None, old), what="a new collector")
        health = wait_until(
            lambda: httpx.get(sidecar.admin + "/health", timeout=10).json(),
            what="/health from the new collector",
        )
        # Every request is counted; what the old collector had not written was sent again.
        assert health["requests"]["count"] == 250
        dropped = health["capture"]["dropped"]
        assert sidecar.terminate() == 0
    assert len(sidecar.rows()) + dropped == 250


def test_the_engine_can_run_in_the_proxys_own_process(model: ModelServer, tmp_path: Path) -> None:
    flags = ("--sidecar-collector", "false", "--sample-rate", "1.0")
    with sidecar_process(model.url, tmp_path, *flags) as sidecar:
        with httpx.Client(base_url=sidecar.url, timeout=10) as client:
            for _ in range(20):
                assert client.post("/v1/models/m:predict", json=V1).status_code == 200
        health = httpx.get(sidecar.admin + "/health", timeout=10).json()
        assert health["requests"]["count"] == 20
        assert health["upstream"]["ready"] is True
        # No collector: the proxy's process owns the store.
        assert "collector" not in (health["resources"] or {})
        assert not collector_running(CollectorPaths.for_db(sidecar.db))
        assert sidecar.terminate() == 0
    assert len(sidecar.rows()) == 20


def test_a_collector_already_running_is_used_and_left_running(
    model: ModelServer, tmp_path: Path
) -> None:
    """As with a collector container beside the sidecar's: the sidecar hands over to it, and at
    SIGTERM leaves at once instead of waiting for a collector that runs until its own."""
    db = tmp_path / "sidecar.duckdb"  # the store sidecar_process names
    paths = CollectorPaths.for_db(str(db))
    collector = subprocess.Popen(
        [sys.executable, "-m", "inferwatch", "collector", "--db", str(db), "--sample-rate", "1.0"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: os.path.exists(paths.ingest), what="the collector")
        with sidecar_process(model.url, tmp_path, *COLLECTOR) as sidecar:
            assert httpx.post(sidecar.url + "/v1/models/m:predict", json=V1).status_code == 200
            assert _collector_pid(sidecar.admin) == collector.pid
            started = time.monotonic()
            assert sidecar.terminate() == 0
            # Before: 5.5 s, waiting for a collector to exit that does not.
            assert time.monotonic() - started < 4
        assert collector.poll() is None  # there for the next sidecar
        assert "already runs" in sidecar.output()
    finally:
        collector.terminate()
        collector.wait(30)
    con = duckdb.connect(str(db), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM requests").fetchone() == (1,)
    finally:
        con.close()
