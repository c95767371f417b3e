"""When the model server is down, slow, resets mid-body or restarts under the sidecar."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, uvicorn_process
from tests.sidecar.conftest import (
    ModelServer,
    Sidecar,
    raw_request,
    sidecar_process,
    start_model_server,
    wait_until,
)

V1 = {"instances": [{"a": 1, "b": 2}]}


def test_upstream_down_gives_502_with_the_reason(tmp_path: Path) -> None:
    port = free_port()  # nothing listens here
    with sidecar_process(f"http://127.0.0.1:{port}", tmp_path) as sidecar:
        response = httpx.post(sidecar.url + "/v1/models/m:predict", json=V1, timeout=10)
        assert response.status_code == 502
        reason = response.json()["error"]
        assert reason.startswith("upstream unreachable: cannot connect to 127.0.0.1")
        assert response.headers["x-inferwatch-error"] == reason
        assert response.headers["x-request-id"]
        ready = httpx.get(sidecar.admin + "/readyz", timeout=5)
        assert ready.status_code == 503
        reasons = ready.json()["reasons"]
        assert any(f"GET http://127.0.0.1:{port}/health failed" in r for r in reasons)
        health = httpx.get(sidecar.admin + "/health", timeout=5).json()
        assert health["upstream"]["reachable"] is False
        assert health["upstream"]["errors"]["unreachable"] == 1
        assert health["requests"]["errors"] == 1
        metrics = httpx.get(sidecar.admin + "/metrics", timeout=5).text
        assert 'inferwatch_upstream_errors_total{reason="unreachable"} 1.0' in metrics
        assert sidecar.terminate() == 0
    rows = sidecar.rows()
    assert [row["status"] for row in rows] == [502]
    assert rows[0]["error"] == reason  # the stored row says why, as the client was told
    assert "upstream unreachable" in sidecar.output()


def test_slow_upstream_gives_504(model: ModelServer, tmp_path: Path) -> None:
    with sidecar_process(model.url, tmp_path, "--upstream-timeout", "500ms") as sidecar:
        response = httpx.get(sidecar.url + "/slow?s=5", timeout=10)
        assert response.status_code == 504
        assert response.elapsed.total_seconds() < 3
        assert response.json()["error"].startswith("upstream timeout: no data from the upstream")
        # The connection the slow request held was closed, not reused for the next one.
        assert httpx.get(sidecar.url + "/slow?s=0", timeout=10).status_code == 200
        assert sidecar.terminate() == 0
    assert [row["status"] for row in sidecar.rows()] == [504, 200]


def test_the_upstream_timeout_is_per_wait_on_a_reused_connection(
    model: ModelServer, tmp_path: Path
) -> None:
    # Each pause of the stream is under the timeout and the whole is over it: it passes. Then
    # the same kept-alive connection times out a response that does not come.
    with sidecar_process(model.url, tmp_path, "--upstream-timeout", "600ms") as sidecar:
        with httpx.Client(base_url=sidecar.url, timeout=10) as client:
            for _ in range(2):
                response = client.get("/drip", params={"n": 5, "gap": 0.3})
                assert response.status_code == 200
                assert response.text == "".join(f"chunk {i}\n" for i in range(5))
            response = client.get("/slow", params={"s": 5})
            assert response.status_code == 504
            assert 0.5 < response.elapsed.total_seconds() < 3
        assert sidecar.terminate() == 0
    assert [row["status"] for row in sidecar.rows()] == [200, 200, 504]


def test_upstream_reset_mid_body_cuts_the_response(sidecar: Sidecar) -> None:
    with httpx.Client(base_url=sidecar.url, timeout=10) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            client.get("/reset")
        # The sidecar and its pool are fine afterwards.
        assert client.post("/v1/models/m:predict", json=V1).status_code == 200
    health = httpx.get(sidecar.admin + "/health", timeout=5).json()
    assert health["upstream"]["errors"]["closed"] == 1
    assert sidecar.terminate() == 0
    rows = sidecar.rows()
    assert rows[0]["route"] == "/reset"
    assert rows[0]["error"] == "UpstreamClosed"
    assert "Traceback" not in sidecar.output()


def test_upstream_restarting_under_the_sidecar(tmp_path: Path) -> None:
    model = start_model_server()
    try:
        with sidecar_process(model.url, tmp_path) as sidecar, httpx.Client(timeout=10) as client:
            for _ in range(5):  # leaves kept-alive connections in the pool
                assert client.post(sidecar.url + "/v1/models/m:predict", json=V1).status_code == 200
            model.stop()
            down = client.post(sidecar.url + "/v1/models/m:predict", json=V1)
            assert down.status_code == 502
            model = start_model_server(port=model.port)
            # Pooled connections to the old process are gone; a fresh one is made.
            for _ in range(5):
                assert client.post(sidecar.url + "/v1/models/m:predict", json=V1).status_code == 200
            ready = client.get(sidecar.admin + "/readyz")
            assert ready.status_code == 200, ready.text
            assert sidecar.terminate() == 0
        assert [row["status"] for row in sidecar.rows()] == [200] * 5 + [502] + [200] * 5
    finally:
        model.stop()


def test_readyz_follows_the_upstream_health_route(tmp_path: Path) -> None:
    model = start_model_server(env={"UPSTREAM_READY": "0"})
    try:
        with sidecar_process(model.url, tmp_path) as sidecar:
            ready = httpx.get(sidecar.admin + "/readyz", timeout=5)
            assert ready.status_code == 503
            assert ready.json()["reasons"] == [
                f"upstream health check GET {model.url}/health answered 503"
            ]
            health = httpx.get(sidecar.admin + "/health", timeout=5).json()["upstream"]
            assert health["reachable"] is True and health["ready"] is False
        with sidecar_process(model.url, tmp_path, "--upstream-health-path", "/echo") as sidecar:
            assert httpx.get(sidecar.admin + "/readyz", timeout=5).status_code == 200
    finally:
        model.stop()


def test_client_limits_are_settings(model: ModelServer, tmp_path: Path) -> None:
    flags = ("--client-timeout", "1s", "--max-head-bytes", "1KiB")
    with sidecar_process(model.url, tmp_path, *flags) as sidecar:
        port = int(sidecar.url.rsplit(":", 1)[1])
        # A head still unfinished past 1 KiB (a head that ends within one read is let through).
        big = b"GET /health HTTP/1.1\r\nhost: x\r\nx-pad: " + b"a" * 4096
        assert raw_request(port, big).startswith(b"HTTP/1.1 431 ")
        silent = raw_request(port, b"GET /health HTTP/1.1\r\n", timeout=30)
        assert silent.startswith(b"HTTP/1.1 408 ")
        assert httpx.get(sidecar.url + "/health", timeout=10).status_code == 200
        assert sidecar.terminate() == 0


def test_the_readiness_route_is_found_from_a_model_server(tmp_path: Path) -> None:
    """An Open Inference Protocol server: /v2/health/ready, not ready until it says so."""
    model = start_model_server(env={"UPSTREAM_READY": "0"})
    try:
        with sidecar_process(model.url, tmp_path, health_path=None) as sidecar:
            ready = httpx.get(sidecar.admin + "/readyz", timeout=5)
            assert ready.status_code == 503
            assert ready.json()["reasons"] == [
                f"upstream health check GET {model.url}/v2/health/ready answered 503"
            ]
            assert sidecar.terminate() == 0
        assert "upstream readiness: not found yet" in sidecar.output()
    finally:
        model.stop()
    model = start_model_server(port=model.port)
    try:
        with sidecar_process(model.url, tmp_path, health_path=None) as sidecar:
            assert httpx.get(sidecar.admin + "/readyz", timeout=5).status_code == 200
            upstream = httpx.get(sidecar.admin + "/health", timeout=5).json()["upstream"]
            assert upstream["health_url"] == f"{model.url}/v2/health/ready"
            assert sidecar.terminate() == 0
        assert f"upstream readiness: GET {model.url}/v2/health/ready" in sidecar.output()
    finally:
        model.stop()


def test_a_plain_model_app_is_ready_when_it_accepts_connections(tmp_path: Path) -> None:
    """No health route at all: every candidate answers 404 or 405, so a TCP connect decides."""
    app = uvicorn_process("tests.apps.plain_app:app", ready_path="/predict")
    with app as (process, url), sidecar_process(url, tmp_path, health_path=None) as sidecar:
        ready = httpx.get(sidecar.admin + "/readyz", timeout=5)
        assert ready.status_code == 200, ready.text
        predicted = httpx.post(sidecar.url + "/predict", json=V1, timeout=5)
        assert predicted.json() == {"predictions": [0.5]}
        upstream = httpx.get(sidecar.admin + "/health", timeout=5).json()["upstream"]
        assert upstream["health_url"] == url.replace("http://", "tcp://")
        process.terminate()
        process.wait(30)
        wait_until(
            lambda: httpx.get(sidecar.admin + "/readyz", timeout=5).status_code == 503,
            what="/readyz to turn 503 once the app is gone",
        )
        assert sidecar.terminate() == 0
    port = url.rsplit(":", 1)[1]
    assert f"using a TCP connect to 127.0.0.1:{port}" in sidecar.output()
