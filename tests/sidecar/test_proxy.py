"""The sidecar in front of a real model server: payload capture, streaming, headers, pooling."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.conftest import require_tool
from tests.sidecar.conftest import ModelServer, Sidecar, sidecar_process, wait_until

V1 = {"instances": [{"a": 1, "b": 2.5}, {"a": 3, "b": 4.0}]}
V2 = {"inputs": [{"name": "x", "shape": [2, 3], "datatype": "FP64", "data": [1, 2, 3, 4, 5, 6]}]}
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "Say hello"}], "max_tokens": 8}


def _features(sidecar: Sidecar, request_id: str) -> dict[tuple[str, int, str], object]:
    rows = sidecar.rows(
        "SELECT role, row_index, name, num, str FROM features WHERE request_id = "
        f"'{request_id}' ORDER BY role, row_index, name"
    )
    return {
        (r["role"], r["row_index"], r["name"]): r["num"] if r["num"] is not None else r["str"]
        for r in rows
    }


def test_every_payload_format_is_captured(sidecar: Sidecar) -> None:
    ids = {}
    with httpx.Client(base_url=sidecar.url, timeout=10) as client:
        response = client.post("/v1/models/m:predict", json=V1)
        assert response.json() == {"predictions": [3.5, 7.0]}
        ids["v1"] = response.headers["x-request-id"]
        response = client.post("/v2/models/m/infer", json=V2, headers={"x-request-id": "oip-1"})
        assert response.json()["outputs"][0]["data"] == [6, 15]
        assert response.headers["x-request-id"] == "oip-1"
        ids["v2"] = "oip-1"
        response = client.post("/v1/chat/completions", json=CHAT)
        assert response.json()["choices"][0]["message"]["content"] == "Hello from the model"
        ids["chat"] = response.headers["x-request-id"]
        with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True}) as sse:
            assert sse.headers["content-type"].startswith("text/event-stream")
            text = sse.read().decode()
        assert text.rstrip().endswith("data: [DONE]")
        ids["stream"] = sse.headers["x-request-id"]
    assert sidecar.terminate() == 0

    requests = {row["request_id"]: row for row in sidecar.rows()}
    for request_id in ids.values():
        row = requests[request_id]
        assert row["status"] == 200
        assert row["input_status"] == "ok", row
        assert row["output_status"] == "ok", row
    v1 = _features(sidecar, ids["v1"])
    assert v1[("input", 0, "a")] == 1 and v1[("input", 1, "b")] == 4.0
    assert v1[("output", 1, "prediction")] == 7.0
    v2 = _features(sidecar, ids["v2"])
    assert v2[("input", 1, "x[2]")] == 6 and v2[("output", 0, "y")] == 6
    chat = _features(sidecar, ids["chat"])
    assert chat[("input", 0, "model")] == "tiny"
    assert chat[("input", 0, "prompt_chars")] == len("Say hello")
    assert chat[("output", 0, "finish_reason")] == "stop"
    stream = _features(sidecar, ids["stream"])
    assert stream[("output", 0, "completion_chars")] == len("Hello from the model")
    assert stream[("output", 0, "completion_tokens")] == 4


def _events(lines: Iterator[str]) -> Iterator[dict]:
    for line in lines:
        if line.startswith("data: ") and line != "data: [DONE]":
            yield json.loads(line[6:])


def test_sse_first_event_arrives_before_the_upstream_sends_the_last(
    sidecar: Sidecar, model: ModelServer
) -> None:
    # The model server holds the stream after its first event until /release: the test can only
    # read that event if the sidecar passed it on without waiting for the rest.
    with (
        httpx.Client(base_url=sidecar.url, timeout=10) as client,
        client.stream("POST", "/v1/chat/completions?wait=1", json={**CHAT, "stream": True}) as sse,
    ):
        events = _events(sse.iter_lines())
        first = next(events)
        assert first["choices"][0]["delta"]["content"] == "Hello"
        assert httpx.post(model.url + "/release", timeout=5).json() == {"released": True}
        rest = list(events)
    pieces = [event["choices"][0]["delta"].get("content") for event in rest]
    assert pieces == [" from", " the", " model", None]
    assert rest[-1]["choices"][0]["finish_reason"] == "stop"


def test_a_client_leaving_a_stream_abandons_the_upstream_request(
    sidecar: Sidecar, model: ModelServer
) -> None:
    # An LLM would go on generating for nobody: the sidecar must hang up on the upstream too.
    with (
        httpx.Client(base_url=sidecar.url, timeout=10) as client,
        client.stream("POST", "/v1/chat/completions?wait=1", json={**CHAT, "stream": True}) as sse,
    ):
        next(_events(sse.iter_lines()))
    wait_until(
        lambda: httpx.get(model.url + "/_abandoned", timeout=2).json()["streams"] == 1,
        what="the model server to see its stream abandoned",
    )
    upstream = httpx.get(sidecar.admin + "/health", timeout=5).json()["upstream"]
    assert upstream["client_disconnects"] == 1
    assert upstream["errors"] == {"unreachable": 0, "timeout": 0, "closed": 0, "protocol": 0}


def test_hop_by_hop_headers_and_forwarding(sidecar: Sidecar, model: ModelServer) -> None:
    response = httpx.get(
        sidecar.url + "/echo?q=1",
        headers={
            "host": "public.example",
            "connection": "keep-alive, x-private",
            "x-private": "secret",
            "keep-alive": "timeout=5",
            "te": "trailers",
            "proxy-authorization": "Basic abc",
            "x-forwarded-for": "203.0.113.9",
            "x-model-tenant": "t1",
        },
        timeout=5,
    )
    assert response.status_code == 200
    assert "x-inferwatch-error" not in response.headers
    seen = model.seen()[-1]
    headers = {name: value for name, value in seen["headers"]}
    assert seen["path"] == "/echo" and seen["query"] == "q=1"
    assert headers["host"] == f"127.0.0.1:{model.port}"
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-forwarded-host"] == "public.example"
    assert headers["x-model-tenant"] == "t1"
    for gone in ("x-private", "keep-alive", "te", "proxy-authorization"):
        assert gone not in headers
    assert headers.get("connection") in (None, "keep-alive")  # the sidecar's own, not the client's


def test_the_model_server_sees_the_request_id_the_store_records(
    sidecar: Sidecar, model: ModelServer
) -> None:
    with httpx.Client(base_url=sidecar.url, timeout=10) as client:
        generated = client.post("/v1/models/m:predict", json=V1).headers["x-request-id"]
        kept = client.post("/v1/models/m:predict", json=V1, headers={"x-request-id": "abc-1"})
        replaced = client.post("/v1/models/m:predict", json=V1, headers={"x-request-id": "x" * 200})
    assert kept.headers["x-request-id"] == "abc-1"
    fresh = replaced.headers["x-request-id"]
    assert fresh not in ("x" * 200, generated) and len(fresh) == 32
    upstream_ids = [
        [value for name, value in request["headers"] if name == "x-request-id"]
        for request in model.seen()
        if request["method"] == "POST"  # not the sidecar's own read of the model's metadata
    ]
    assert upstream_ids == [[generated], ["abc-1"], [fresh]]
    assert sidecar.terminate() == 0
    stored = [row["request_id"] for row in sidecar.rows()]
    assert stored == [generated, "abc-1", fresh]


def test_request_bodies_chunked_and_sized(sidecar: Sidecar) -> None:
    payload = b"".join(b"%06d," % i for i in range(50_000))  # 350 kB

    def pieces() -> Iterator[bytes]:
        for start in range(0, len(payload), 10_000):
            yield payload[start : start + 10_000]

    with httpx.Client(base_url=sidecar.url, timeout=10) as client:
        chunked = client.post("/echo", content=pieces(), headers={"content-type": "text/plain"})
        assert chunked.content == payload
        sized = client.put("/echo", content=payload, headers={"content-type": "text/plain"})
        assert sized.content == payload
        empty = client.post("/echo", content=b"")
        assert empty.status_code == 200 and empty.content == b""
        head = client.head("/echo")
        assert head.status_code == 200 and head.content == b""
        after = client.get("/echo")
        assert after.status_code == 200
        missing = client.get("/no/such/route")
        assert missing.status_code == 404 and missing.json() == {"path": "/no/such/route"}


def test_one_pool_of_upstream_connections(sidecar: Sidecar) -> None:
    with httpx.Client(base_url=sidecar.url, timeout=10) as client:
        for _ in range(200):
            assert client.post("/v1/models/m:predict", json=V1).status_code == 200
    upstream = httpx.get(sidecar.admin + "/health", timeout=5).json()["upstream"]
    assert upstream["url"].startswith("http://127.0.0.1:")
    assert upstream["reachable"] is True
    assert upstream["connections"]["opened"] <= 2  # kept alive and reused, not one per request


def test_readyz_health_and_metrics_on_the_admin_port(sidecar: Sidecar) -> None:
    ready = httpx.get(sidecar.admin + "/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    assert httpx.post(sidecar.url + "/v1/models/m:predict", json=V1, timeout=5).status_code == 200
    health = httpx.get(sidecar.admin + "/health", timeout=5).json()
    assert health["requests"]["count"] >= 1
    assert health["upstream"]["reachable"] is True
    metrics = httpx.get(sidecar.admin + "/metrics", timeout=5).text
    assert "inferwatch_upstream_up 1.0" in metrics
    assert 'inferwatch_upstream_errors_total{reason="unreachable"} 0.0' in metrics
    assert 'inferwatch_upstream_connections{state="idle"} 1.0' in metrics
    promtool = require_tool("promtool")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=metrics, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0 and not check.stdout.strip() and not check.stderr.strip(), check
    # The monitor API is not on the proxy port: there, every path belongs to the model.
    assert httpx.get(sidecar.url + "/readyz", timeout=5).status_code == 404


def test_expect_100_continue_is_answered_before_the_body_is_sent(sidecar: Sidecar) -> None:
    """The client waits for "100 Continue" before it sends the body; the sidecar holds a
    response's first write back for the body, and must not hold this one."""
    body = b"hello, after the interim response"
    head = (
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-type: text/plain\r\n"
        b"expect: 100-continue\r\ncontent-length: %d\r\n\r\n" % len(body)
    )
    with socket.create_connection(("127.0.0.1", sidecar.port), timeout=10) as sock:
        sock.sendall(head)
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(65536)  # a TimeoutError here: the interim response was held
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        sock.sendall(body)
        answer = interim.partition(b"\r\n\r\n")[2]
        while not answer.endswith(body):
            chunk = sock.recv(65536)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK\r\n"), answer


def test_reports_see_every_response_already_sent(model: ModelServer, tmp_path: Path) -> None:
    # The writer would wait 60 s before writing: the reports must not.
    with sidecar_process(model.url, tmp_path, "--flush-interval", "60") as sidecar:

        def predict() -> None:
            response = httpx.post(sidecar.url + "/v1/models/m:predict", json=V1, timeout=5)
            assert response.status_code == 200

        predict()
        evaluation = httpx.get(sidecar.admin + "/evaluation", timeout=30).json()
        assert evaluation["prediction_field"] == "prediction", evaluation
        for _ in range(2):
            predict()
        health = httpx.get(sidecar.admin + "/health", timeout=30).json()
        assert health["capture"]["stored"] == 3
        assert health["capture"]["queue_depth"] == 0
        predict()
        check = httpx.post(sidecar.admin + "/drift/check", timeout=30).json()
        assert check["window"]["rows"] == 8  # two instances a request
