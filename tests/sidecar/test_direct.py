"""The direct path: which requests take it, and that they are forwarded and captured as through
the ASGI cycle. The sidecar's protocol and proxy run in-process here, so that the test can count
what went direct; the real sidecar's tests (every other file here) go through both paths."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest
import uvicorn

from inferwatch.middleware import Engine, MonitorMiddleware, Settings
from inferwatch.sidecar._client import TimedHttpProtocol
from inferwatch.sidecar._direct import DirectExchange, DirectPath
from inferwatch.sidecar._proxy import Proxy, RequestIds
from inferwatch.sidecar._upstream import Upstream, UpstreamPool
from tests.conftest import free_port
from tests.sidecar.conftest import ModelServer, wait_until


class CountingPath(DirectPath):
    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.taken = 0

    def begin(self, *args: Any) -> DirectExchange | None:
        exchange = super().begin(*args)
        self.taken += exchange is not None
        return exchange


@dataclass
class InProcess:
    url: str
    port: int
    path: CountingPath
    pool: UpstreamPool
    db: str
    server: uvicorn.Server
    thread: threading.Thread
    monitor: MonitorMiddleware

    def rows(self) -> list[dict[str, Any]]:
        """The stored requests; stops the server first."""
        self.server.should_exit = True
        self.thread.join(30)
        self.monitor.stop()
        con = duckdb.connect(self.db, read_only=True)
        try:
            cursor = con.execute("SELECT * FROM requests ORDER BY ts")
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        finally:
            con.close()


@pytest.fixture
def proxy(model: ModelServer, tmp_path: Path) -> Iterator[InProcess]:
    db = str(tmp_path / "direct.duckdb")
    engine = Engine(Settings.load({"db": db, "sample_rate": 1.0}))
    pool = UpstreamPool(Upstream.parse(model.url), limit=4, read_timeout=2.0)
    app = Proxy(pool)
    engine.start()
    monitor = MonitorMiddleware(app, engine=engine, serve_api=False)
    path = CountingPath(monitor, app)

    class Protocol(TimedHttpProtocol):
        direct = path

    port = free_port()
    config = uvicorn.Config(
        RequestIds(monitor),
        host="127.0.0.1",
        port=port,
        http=Protocol,
        lifespan="off",
        log_level="error",
        server_header=False,
        date_header=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    wait_until(lambda: server.started)
    running = InProcess(f"http://127.0.0.1:{port}", port, path, pool, db, server, thread, monitor)
    yield running
    if thread.is_alive():
        server.should_exit = True
        thread.join(30)
        monitor.stop()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(request)
        sock.settimeout(10)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def test_requests_with_a_body_or_none_go_direct_and_are_captured(proxy: InProcess) -> None:
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        first = client.post(
            "/v2/models/m/infer",
            json={"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]},
            headers={"x-request-id": "a1"},
        )
        assert first.status_code == 200 and first.headers["x-request-id"] == "a1"
        echoed = client.post("/echo", content=b"x" * 200_000, headers={"content-type": "a/b"})
        assert echoed.content == b"x" * 200_000 and echoed.headers["content-type"] == "a/b"
        streamed = client.get("/download", params={"bytes": 300_000})  # chunked upstream
        assert len(streamed.content) == 300_000
        missing = client.get("/nowhere")
        assert missing.status_code == 404
    assert proxy.path.taken == 4
    rows = proxy.rows()
    assert [(r["method"], r["route"], r["status"]) for r in rows] == [
        ("POST", "/v2/models/m/infer", 200),
        ("POST", "/echo", 200),
        ("GET", "/download", 200),
        ("GET", "<unmatched>", 404),
    ]
    assert rows[0]["request_id"] == "a1"
    assert all(r["request_id"] for r in rows)


def test_what_the_direct_path_leaves_to_asgi_is_served_alike(proxy: InProcess) -> None:
    port = proxy.port
    old = _raw(port, b"GET /echo HTTP/1.0\r\nHost: x\r\n\r\n")
    assert old.startswith(b"HTTP/1.1 200 ")
    head = _raw(port, b"HEAD /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    chunked = _raw(
        port,
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    assert chunked.startswith(b"HTTP/1.1 200 ") and b'"bytes":3' in chunked
    dots = _raw(port, b"GET /a/../b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert dots.startswith(b"HTTP/1.1 400 ")
    assert proxy.path.taken == 0
    statuses = sorted(r["status"] for r in proxy.rows())
    assert statuses == [200, 200, 200, 400]


def test_keep_alive_and_a_closing_client(proxy: InProcess) -> None:
    request = b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
    answer = _raw(proxy.port, request * 3 + request.replace(b"Host: x", b"Connection: close"))
    assert answer.count(b"HTTP/1.1 200 ") == 4
    assert answer.count(b"connection: close") == 1  # the last response, then the end
    assert proxy.path.taken >= 1
    assert len(proxy.rows()) == 4


def test_upstream_failures_answer_with_the_reason(proxy: InProcess, model: ModelServer) -> None:
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        assert client.get("/health").status_code == 200  # a connection is pooled
        slow = client.get("/slow", params={"s": 5})
        assert slow.status_code == 504
        assert "no data from the upstream within 2 s" in slow.headers["x-inferwatch-error"]
        # A head without its body: the client gets a whole answer, not a head with no body.
        headless = client.get("/head-only")
        assert headless.status_code == 502
        assert "while sending the response" in headless.headers["x-inferwatch-error"]
        cut = None
        try:
            client.get("/reset")
        except httpx.HTTPError as exc:
            cut = exc
        assert cut is not None  # a response cut mid-body is cut for the client too
    taken = proxy.path.taken
    assert taken >= 2
    rows = proxy.rows()
    errors = {r["route"]: (r["status"], r["error"]) for r in rows}
    assert errors["/slow"][0] == 504 and "upstream timeout" in errors["/slow"][1]
    assert errors["/reset"] == (200, "UpstreamClosed")
    assert errors["/head-only"][0] == 502


def test_a_pooled_connection_closed_unanswered_is_retried_once(
    proxy: InProcess, model: ModelServer
) -> None:
    with httpx.Client(base_url=proxy.url, timeout=10) as client:
        assert client.post("/echo", content=b"one").content == b"one"  # pooled, then reused
        # The model server closes the connection without answering: as a keep-alive connection
        # it gave up as the request reached it, so the request goes once more, on a new one.
        hung = client.post("/hangup", content=b"two")
        assert hung.status_code == 502
        assert "closed the connection before responding" in hung.headers["x-inferwatch-error"]
    assert [r["path"] for r in model.seen()].count("/hangup") == 2
    assert proxy.path.taken == 2
    assert [(r["status"], r["route"]) for r in proxy.rows()] == [(200, "/echo"), (502, "/hangup")]


def test_a_client_gone_mid_request_abandons_the_upstream_request(proxy: InProcess) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(b"GET /slow?s=30 HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_until(lambda: proxy.path.in_flight, what="the request in flight")
    wait_until(lambda: not proxy.path.in_flight, what="the request abandoned")
    wait_until(lambda: proxy.pool.count == proxy.pool.idle, what="the upstream connection freed")
    assert [(r["status"], r["route"]) for r in proxy.rows()] == [(499, "/slow")]
