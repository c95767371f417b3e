"""The monitor API in a worker: answered by the collector, so every worker gives the same figures.

Requests under ``api_prefix`` go to the collector's HTTP API on its Unix socket and the answer is
streamed back. ``/healthz`` is answered by the worker itself (it says the worker can serve).

The HTTP/1.1 client is the few lines below on asyncio's streams, not httpx: importing httpx (and
the command-line packages its ``__init__`` pulls in where they are installed) added 9,000 objects
to every worker's heap, and each of the model's full garbage collections walked them.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

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
_CONNECT_S, _WRITE_S, _READ_S = 2.0, 30.0, 300.0
_CHUNK = 65_536
_IDLE_KEPT = 4  # connections kept open per worker for the next request
_METHOD = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([1-5][0-9][0-9])(?: [^\r\n]*)?")
_Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


class _BadResponse(Exception):
    """The collector's answer was not HTTP/1.1 this client can read."""


class ApiForwarder:
    """Forwards monitor API requests to the collector listening on ``socket_path``."""

    def __init__(self, socket_path: str, problem: Callable[[], str | None] = lambda: None) -> None:
        self.socket_path = socket_path
        self._problem = problem  # why the collector could not be started, if it could not
        # Idle keep-alive connections; they belong to the event loop that opened them.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle: list[_Stream] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        """Answer ``scope`` (its ``path`` relative to the API's root) through the collector."""
        if path == "/healthz":
            await _json(send, 200, {"status": "ok"})
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        method: str = scope["method"]
        request = _request_bytes(scope, path, bytes(body))
        if request is None:
            await _json(send, 400, {"error": "not a request the monitor API can answer"})
            return
        try:
            stream, status, headers = await self._exchange(request)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, _BadResponse) as exc:
            reason = self._problem() or (
                f"the collector is not answering ({type(exc).__name__}); it is being started"
            )
            if path == "/readyz":
                await _json(send, 503, {"status": "unavailable", "reasons": [reason]})
            else:
                await _json(send, 503, {"error": reason})
            return
        reusable = False
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(k, v) for k, v in headers if k not in _HOP_BY_HOP],
                }
            )
            reusable = await _relay(stream[0], send, method, status, headers)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            if reusable and len(self._idle) < _IDLE_KEPT:
                self._idle.append(stream)
            else:
                stream[1].close()

    async def _exchange(self, request: bytes) -> tuple[_Stream, int, list[tuple[bytes, bytes]]]:
        """Send ``request`` and read the response's head; a kept connection that the collector
        closed meanwhile (its keep-alive timeout, a restart) is dropped and the next one tried,
        down to a new connection."""
        while True:
            stream, reused = await self._connection()
            reader, writer = stream
            try:
                writer.write(request)
                async with asyncio.timeout(_WRITE_S):
                    await writer.drain()
                async with asyncio.timeout(_READ_S):
                    head = await reader.readuntil(b"\r\n\r\n")
                return stream, *_head(head)
            except (TimeoutError, _BadResponse):  # TimeoutError first: it is an OSError
                writer.close()
                raise
            except asyncio.LimitOverrunError as exc:
                writer.close()
                raise _BadResponse("a response head over 64 KiB") from exc
            except (OSError, asyncio.IncompleteReadError) as exc:
                writer.close()
                unanswered = not isinstance(exc, asyncio.IncompleteReadError) or not exc.partial
                if not (reused and unanswered):
                    raise

    async def _connection(self) -> tuple[_Stream, bool]:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._idle = loop, []
        while self._idle:
            stream = self._idle.pop()
            if not stream[0].at_eof():
                return stream, True
            stream[1].close()
        async with asyncio.timeout(_CONNECT_S):
            return await asyncio.open_unix_connection(self.socket_path), False


def _request_bytes(scope: Scope, path: str, body: bytes) -> bytes | None:
    """The request to send to the collector, or None when it cannot be written as HTTP/1.1."""
    method = scope["method"].encode("latin-1")
    if not _METHOD.fullmatch(method):
        return None
    # The path arrives decoded: encode it again, and any byte of the query a URL may not hold.
    target = quote(path, safe=_SAFE_PATH)
    query = scope.get("query_string", b"")
    if query:
        target += "?" + quote(query, safe=_SAFE_QUERY)
    lines = [b"%s %s HTTP/1.1\r\nhost: collector\r\n" % (method, target.encode("ascii"))]
    # Our own headers are set here only: a client's copies of them are dropped.
    for key, value in scope["headers"]:
        if key in _HOP_BY_HOP or key.startswith(_OWN_HEADERS) or key == b"content-length":
            continue
        if b"\r" in value or b"\n" in value or b":" in key:
            return None
        lines.append(b"%s: %s\r\n" % (key, value))
    lines.append(b"%s: %s\r\n" % (ROOT_PATH_HEADER, scope.get("root_path", "").encode("latin-1")))
    client = scope.get("client")
    if client:
        lines.append(b"%s: %s:%d\r\n" % (CLIENT_HEADER, client[0].encode("latin-1"), client[1]))
    lines.append(b"content-length: %d\r\n\r\n" % len(body))
    lines.append(body)
    return b"".join(lines)


def _head(head: bytes) -> tuple[int, list[tuple[bytes, bytes]]]:
    """The status and headers (names lowercased) of a response's head."""
    status_line, *fields = head[:-4].split(b"\r\n")
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise _BadResponse(f"status line {status_line[:80]!r}")
    headers = []
    for field in fields:
        name, colon, value = field.partition(b":")
        if not colon or not name or name != name.strip():
            raise _BadResponse(f"header line {field[:80]!r}")
        headers.append((name.lower(), value.strip()))
    return int(match[1]), headers


async def _relay(
    reader: asyncio.StreamReader,
    send: Send,
    method: str,
    status: int,
    headers: list[tuple[bytes, bytes]],
) -> bool:
    """Send the response's body on as it arrives; True when the connection can be used again."""
    fields = dict(headers)
    reusable = b"close" not in fields.get(b"connection", b"").lower()
    if method == "HEAD" or status in (204, 304) or status < 200:
        return reusable
    async with asyncio.timeout(_READ_S):
        if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
            while size := _chunk_size(await reader.readuntil(b"\r\n")):
                chunk = await reader.readexactly(size + 2)
                await send({"type": "http.response.body", "body": chunk[:-2], "more_body": True})
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers, not forwarded
            return reusable
        length = fields.get(b"content-length")
        left = int(length) if length is not None else -1
        while left != 0:
            chunk = await reader.read(_CHUNK if left < 0 else min(_CHUNK, left))
            if not chunk:
                if left > 0:
                    raise asyncio.IncompleteReadError(b"", left)
                return False  # delimited by the end of the connection
            left -= len(chunk) if left > 0 else 0
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    return reusable


def _chunk_size(line: bytes) -> int:
    size = line.split(b";")[0].strip()
    if not size or size.strip(b"0123456789abcdefABCDEF"):
        raise _BadResponse(f"chunk size line {line[:80]!r}")
    return int(size, 16)


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
