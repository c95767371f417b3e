"""A worker's monitor API forwarded to the collector's HTTP server on its Unix socket: a real
uvicorn server there, and a raw socket server for the answers uvicorn never gives."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from inferwatch.middleware.collector.forward import ApiForwarder
from inferwatch.middleware.collector.wire import CLIENT_HEADER, ROOT_PATH_HEADER
from tests.conftest import wait_until


async def _echo(request: Request) -> Response:
    return JSONResponse(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": [[k.decode(), v.decode()] for k, v in request.scope["headers"]],
            "body": (await request.body()).decode(),
        }
    )


async def _chunks(request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        for i in range(50):
            yield b"%04d," % i

    return StreamingResponse(parts(), media_type="text/csv")


async def _big(request: Request) -> Response:
    return Response(b"x" * 300_000, media_type="application/octet-stream")


async def _empty(request: Request) -> Response:
    return Response(status_code=204)


API = Starlette(
    routes=[
        Route("/echo/{rest:path}", _echo, methods=["GET", "POST", "DELETE"]),
        Route("/chunks", _chunks),
        Route("/big", _big),
        Route("/empty", _empty, methods=["POST"]),
    ]
)


@pytest.fixture(scope="module")
def collector_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real uvicorn serving ``API`` on a Unix socket, with a short keep-alive timeout."""
    path = str(tmp_path_factory.mktemp("fwd") / "api.sock")
    config = uvicorn.Config(
        API, uds=path, log_level="warning", timeout_keep_alive=1, lifespan="off"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started, 10)
    yield path
    server.should_exit = True
    thread.join(10)


def _scope(method: str, headers: list[tuple[bytes, bytes]] | None = None, **more: Any) -> dict:
    return {
        "type": "http",
        "method": method,
        "headers": headers or [(b"host", b"model:8000")],
        "query_string": b"",
        "root_path": "/monitor",
        "client": ("10.0.0.7", 51000),
        **more,
    }


async def _call(
    forwarder: ApiForwarder, scope: dict, path: str, body: bytes = b""
) -> tuple[int, dict[bytes, bytes], bytes, list[dict]]:
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    await forwarder(scope, receive, send, path)
    start = sent[0]
    assert start["type"] == "http.response.start"
    assert not sent[-1].get("more_body", False)  # the answer ends
    content = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], dict(start["headers"]), content, sent


def test_requests_reach_the_collector_as_sent_with_the_workers_own_headers(
    collector_api: str,
) -> None:
    async def go() -> None:
        forwarder = ApiForwarder(collector_api)
        headers = [
            (b"host", b"model:8000"),
            (b"accept", b"application/json"),
            (b"x-inferwatch-client", b"1.2.3.4:5"),  # a client's copy: dropped
            (b"connection", b"keep-alive"),
            (b"content-length", b"7"),
        ]
        scope = _scope("POST", headers, query_string=b"window=1h&model=a b")
        status, got, content, _ = await _call(forwarder, scope, "/echo/dr ift", b'{"a":1}')
        assert status == 200 and got[b"content-type"] == b"application/json"
        echo = orjson.loads(content)
        assert echo["method"] == "POST" and echo["body"] == '{"a":1}'
        assert echo["path"] == "/echo/dr ift" and echo["query"] == "window=1h&model=a%20b"
        sent = dict(echo["headers"])
        assert sent["accept"] == "application/json" and sent["host"] == "collector"
        assert sent[CLIENT_HEADER.decode()] == "10.0.0.7:51000"
        assert sent[ROOT_PATH_HEADER.decode()] == "/monitor"
        assert sent["content-length"] == "7"
        assert [k for k, _ in echo["headers"]].count(CLIENT_HEADER.decode()) == 1

    asyncio.run(go())


def test_chunked_large_and_empty_answers_arrive_whole(collector_api: str) -> None:
    async def go() -> None:
        forwarder = ApiForwarder(collector_api)
        status, headers, content, sent = await _call(forwarder, _scope("GET"), "/chunks")
        assert status == 200 and content == b"".join(b"%04d," % i for i in range(50))
        assert b"transfer-encoding" not in headers  # hop-by-hop: the worker's server frames it
        status, headers, content, sent = await _call(forwarder, _scope("GET"), "/big")
        assert status == 200 and content == b"x" * 300_000 and len(sent) > 3  # streamed on
        status, _, content, _ = await _call(forwarder, _scope("POST"), "/empty")
        assert status == 204 and content == b""
        status, _, content, _ = await _call(forwarder, _scope("HEAD"), "/big")
        assert status == 200 and content == b""
        status, _, content, _ = await _call(forwarder, _scope("GET"), "/echo/x")
        assert status == 200 and orjson.loads(content)["path"] == "/echo/x"

    asyncio.run(go())


def test_a_connection_the_collector_closed_while_idle_is_replaced(collector_api: str) -> None:
    async def go() -> None:
        forwarder = ApiForwarder(collector_api)
        assert (await _call(forwarder, _scope("GET"), "/echo/a"))[0] == 200
        assert len(forwarder._idle) == 1
        await asyncio.sleep(1.6)  # past the server's keep-alive timeout: it closed it
        assert (await _call(forwarder, _scope("GET"), "/echo/b"))[0] == 200

    asyncio.run(go())


def test_no_collector_is_a_503_that_says_why(tmp_path: Path) -> None:
    async def go() -> None:
        forwarder = ApiForwarder(str(tmp_path / "none.sock"), lambda: None)
        status, _, content, _ = await _call(forwarder, _scope("GET"), "/readyz")
        assert status == 503
        body = orjson.loads(content)
        assert body["status"] == "unavailable" and "not answering" in body["reasons"][0]
        why = ApiForwarder(str(tmp_path / "none.sock"), lambda: "the collector cannot start: x")
        status, _, content, _ = await _call(why, _scope("GET"), "/health")
        assert status == 503 and orjson.loads(content) == {"error": "the collector cannot start: x"}
        status, _, content, _ = await _call(why, _scope("GET"), "/healthz")
        assert status == 200 and orjson.loads(content) == {"status": "ok"}

    asyncio.run(go())


def test_headers_that_cannot_be_written_are_a_400(collector_api: str) -> None:
    async def go() -> None:
        forwarder = ApiForwarder(collector_api)
        bad = _scope("GET", [(b"x-a", b"1\r\nx-injected: 1")])
        assert (await _call(forwarder, bad, "/echo/x"))[0] == 400
        assert (await _call(forwarder, _scope("GE T"), "/echo/x"))[0] == 400

    asyncio.run(go())


@contextlib.asynccontextmanager
async def _raw_server(path: str, answers: list[bytes]) -> AsyncIterator[list[int]]:
    """A Unix socket server that reads one request per connection and writes the next answer;
    an empty answer closes the connection unanswered. Yields the connection count."""
    accepted = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted[0] += 1
        while answers:
            try:
                await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                break
            answer = answers.pop(0)
            if not answer:
                break
            writer.write(answer)
            await writer.drain()
            if b"connection: close" in answer:
                break
        writer.close()

    server = await asyncio.start_unix_server(handle, path)
    try:
        yield accepted
    finally:
        server.close()


def test_answers_uvicorn_never_gives(tmp_path: Path) -> None:
    path = str(tmp_path / "raw.sock")

    async def go() -> None:
        answers = [
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"2;x=1\r\nab\r\n0\r\nt: 1\r\n\r\n",
            b"",  # a kept connection closed unanswered: sent again on a new one
            b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/9 nonsense\r\n\r\n",
        ]
        async with _raw_server(path, answers) as accepted:
            forwarder = ApiForwarder(path)
            assert (await _call(forwarder, _scope("GET"), "/a"))[2] == b"ok"
            assert accepted[0] == 1
            assert (await _call(forwarder, _scope("GET"), "/b"))[2] == b"until the end"
            assert (await _call(forwarder, _scope("GET"), "/c"))[2] == b"ab"
            assert accepted[0] == 2 and len(forwarder._idle) == 1
            status, _, content, _ = await _call(forwarder, _scope("POST"), "/d", b"x")
            assert (status, content) == (201, b"") and accepted[0] == 3
            status, _, content, _ = await _call(forwarder, _scope("GET"), "/e")
            assert status == 503 and b"_BadResponse" in content

    asyncio.run(go())
