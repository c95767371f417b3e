"""The monitor API in a worker: answered by the collector, so every worker gives the same figures.

Requests under ``api_prefix`` go to the collector's HTTP API on its Unix socket and the answer is
streamed back. ``/healthz`` is answered by the worker itself (it says the worker can serve).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx
import orjson
from starlette.types import Message, Receive, Scope, Send

from .wire import CLIENT_HEADER, ROOT_PATH_HEADER

__all__ = ["ApiForwarder"]

_HOP_BY_HOP = {
    b"connection", b"keep-alive", b"transfer-encoding", b"te", b"trailer", b"upgrade", b"host",
    b"proxy-connection",
}  # fmt: skip
_OWN_HEADERS = b"x-inferwatch-"
_SAFE_PATH = "/!$&'()*+,;=:@-._~"
_SAFE_QUERY = _SAFE_PATH + "?%"
_TIMEOUT = httpx.Timeout(connect=2.0, read=300.0, write=30.0, pool=10.0)


class ApiForwarder:
    """Forwards monitor API requests to the collector listening on ``socket_path``."""

    def __init__(self, socket_path: str, problem: Callable[[], str | None] = lambda: None) -> None:
        self.socket_path = socket_path
        self._problem = problem  # why the collector could not be started, if it could not
        self._clients: dict[int, httpx.AsyncClient] = {}

    def _client(self) -> httpx.AsyncClient:
        # A client belongs to one event loop; a worker has one, tests may run several.
        loop = id(asyncio.get_running_loop())
        client = self._clients.get(loop)
        if client is None:
            transport = httpx.AsyncHTTPTransport(uds=self.socket_path)
            client = httpx.AsyncClient(transport=transport, timeout=_TIMEOUT)
            self._clients = {loop: client}
        return client

    async def __call__(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """Answer ``scope`` (its ``path`` relative to the API's root) through the collector."""
        if path == "/healthz":
            await _json(send, 200, {"status": "ok"})
            return
        # Our own headers are set here only: a client's copies of them are dropped.
        headers = [
            (k, v)
            for k, v in scope["headers"]
            if k not in _HOP_BY_HOP and not k.startswith(_OWN_HEADERS)
        ]
        headers.append((ROOT_PATH_HEADER, (scope.get("root_path", "")).encode("latin-1")))
        client = scope.get("client")
        if client:
            headers.append((CLIENT_HEADER, f"{client[0]}:{client[1]}".encode("latin-1")))
        query = scope.get("query_string", b"")
        # The path arrives decoded: encode it again, and any byte of the query a URL may not hold.
        target = quote(path, safe=_SAFE_PATH)
        if query:
            target += "?" + quote(query, safe=_SAFE_QUERY)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        client = self._client()
        try:
            url = httpx.URL("http://collector", raw_path=target.encode("ascii"))
            request = client.build_request(
                scope["method"], url, headers=headers, content=bytes(body)
            )
        except (httpx.InvalidURL, ValueError) as exc:
            await _json(send, 400, {"error": f"not a request the monitor API can answer: {exc}"})
            return
        try:
            response = await client.send(request, stream=True)
        except httpx.TransportError as exc:
            reason = self._problem() or (
                f"the collector is not answering ({type(exc).__name__}); it is being started"
            )
            if path == "/readyz":
                await _json(send, 503, {"status": "unavailable", "reasons": [reason]})
            else:
                await _json(send, 503, {"error": reason})
            return
        try:
            raw = [(k, v) for k, v in response.headers.raw if k.lower() not in _HOP_BY_HOP]
            await send(
                {"type": "http.response.start", "status": response.status_code, "headers": raw}
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _json(send: Send, status: int, content: Any) -> None:
    body = orjson.dumps(content)
    start: Message = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }
    await send(start)
    await send({"type": "http.response.body", "body": body})
