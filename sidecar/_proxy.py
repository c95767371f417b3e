"""The reverse proxy as a pure ASGI app: every request goes to the one upstream, streamed.

MonitorMiddleware wraps it and tees what it captures from the ASGI messages, so the proxy itself
never holds a whole body. What a request may contribute upstream is decided in ``_headers``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from inferwatch.middleware.capture.request_ids import new_request_id

from ._connection import ClientDisconnected, Connection, UpstreamError
from ._headers import request_head, response_headers, upstream_target
from ._upstream import UpstreamPool

__all__ = ["ERROR_HEADER", "HEAD_DELAY", "Proxy", "RequestIds", "UpstreamStats", "error_reply"]

logger = logging.getLogger("inferwatch")

ERROR_HEADER = b"x-inferwatch-error"
"""Response header that carries the reason when the sidecar answers instead of the upstream."""

_REQUEST_ID = b"x-request-id"
HEAD_DELAY = 0.01
"""Seconds a response head that arrives alone waits to leave with its first body bytes."""
_WATCH_AFTER = 1.0  # exchanges longer than this watch for the client leaving
_LOG_EVERY = 10.0


class UpstreamStats:
    """Upstream failures by reason, for /metrics, with a log line at most every 10 s per reason."""

    def __init__(self) -> None:
        self.errors: dict[str, int] = {}
        self.client_gone = 0
        self._logged: dict[str, tuple[float, int]] = {}

    def failed(self, error: UpstreamError) -> None:
        label = error.label
        self.errors[label] = self.errors.get(label, 0) + 1
        now = time.monotonic()
        last, quiet = self._logged.get(label, (0.0, 0))
        if now - last >= _LOG_EVERY:
            more = f" ({quiet} more like it since the last report)" if quiet else ""
            logger.warning("%s: %s%s", error.kind, error, more)
            self._logged[label] = (now, 0)
        else:
            self._logged[label] = (last, quiet + 1)


class _Watch:
    """Notices a client that leaves during a long exchange and abandons the upstream request.

    Started only for exchanges that outlive ``_WATCH_AFTER``, so that the usual short request
    costs an entry in :class:`_Watches`, not a task.
    """

    __slots__ = ("armed", "conn", "done", "receive", "task", "watches")

    def __init__(self, receive: Receive, watches: _Watches) -> None:
        self.receive = receive
        self.watches = watches
        self.conn: Connection | None = None
        self.task: asyncio.Task[None] | None = None
        self.armed = False
        self.done = False

    def arm(self, conn: Connection) -> None:
        self.conn = conn  # a retry arms again, with the new connection
        if not self.armed:
            self.armed = True
            self.watches.add(self, conn.loop)

    def start(self) -> None:
        if not self.done:
            self.task = asyncio.get_running_loop().create_task(self._run())  # once a second at most

    async def _run(self) -> None:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                break
        if not self.done and self.conn is not None:
            self.conn.abort(ClientDisconnected("the client went away"))

    def stop(self) -> None:
        self.done = True
        self.watches.discard(self)
        if self.task is not None and not self.task.done():
            self.task.cancel()


class _Watches:
    """The exchanges in flight, looked over every half ``_WATCH_AFTER`` for those past it.

    One timer for all of them, where a timer set and cancelled per exchange cost about 3 µs.
    A watch starts between ``_WATCH_AFTER`` and one and a half times that into its exchange.
    """

    def __init__(self) -> None:
        self._since: dict[_Watch, float] = {}  # in the order armed, so the oldest come first
        self._timer: asyncio.TimerHandle | None = None

    def add(self, watch: _Watch, loop: asyncio.AbstractEventLoop) -> None:
        self._since[watch] = loop.time()
        if self._timer is None:
            self._timer = loop.call_later(_WATCH_AFTER / 2, self._sweep, loop)

    def discard(self, watch: _Watch) -> None:
        self._since.pop(watch, None)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        cutoff = loop.time() - _WATCH_AFTER
        due: list[_Watch] = []
        for watch, since in self._since.items():
            if since > cutoff:
                break
            due.append(watch)
        for watch in due:
            del self._since[watch]
            watch.start()
        if self._since:
            self._timer = loop.call_later(_WATCH_AFTER / 2, self._sweep, loop)


class RequestIds:
    """Gives a request without a usable X-Request-ID one before MonitorMiddleware reads it.

    The middleware then records the same ID that the proxy forwards, so the model server's logs
    and the log store agree. Usable means what the middleware accepts: ASCII, 1 to 128 bytes.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers: list[tuple[bytes, bytes]] = scope["headers"]
            current = None
            for name, value in headers:
                if name == _REQUEST_ID:
                    current = value  # the last one counts, as in the middleware
            if current is None or not (0 < len(current) <= 128 and current.isascii()):
                if current is not None:
                    headers = [item for item in headers if item[0] != _REQUEST_ID]
                new = (_REQUEST_ID, new_request_id())
                scope = {**scope, "headers": [*headers, new]}
        await self.app(scope, receive, send)


class Proxy:
    """ASGI app that forwards every HTTP request to ``pool``'s upstream and streams it back."""

    def __init__(self, pool: UpstreamPool, stats: UpstreamStats | None = None) -> None:
        self.pool = pool
        self.stats = stats if stats is not None else UpstreamStats()
        self._base = pool.upstream.base_path
        self._host = pool.upstream.host_header
        self._timeout = pool.read_timeout
        self._watches = _Watches()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method: str = scope["method"]
        target = upstream_target(scope, self._base)
        if target is None:
            await _reply(send, 400, "bad request target: only paths without . or .. segments")
            return
        if method == "CONNECT":
            await _reply(send, 405, "CONNECT is not supported: this is a reverse proxy")
            return
        line = b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), target)
        head, body = request_head(scope, self._host, line)
        watch = _Watch(receive, self._watches)
        try:
            await self._exchange(method, head, body, receive, send, watch)
        finally:
            watch.stop()

    async def _exchange(
        self,
        method: str,
        head: bytes,
        body: int,
        receive: Receive,
        send: Send,
        watch: _Watch,
    ) -> None:
        try:
            conn = await self.pool.request(method, head, receive, body, watch.arm)
        except UpstreamError as exc:
            self.stats.failed(exc)
            await _reply(send, exc.status, f"{exc.kind}: {exc}")
            return
        except ClientDisconnected:
            await _client_gone(self.stats, send)
            return
        started = False
        try:
            start: Message = {
                "type": "http.response.start",
                "status": conn.status,
                "headers": response_headers(conn.headers, conn.status),
            }
            await conn.settle(HEAD_DELAY)
            while True:
                data = await conn.read(self._timeout)
                if conn.drained:
                    watch.done = True
                    self.pool.release(conn)
                    if not started:
                        await send(start)
                    await send({"type": "http.response.body", "body": data, "more_body": False})
                    return
                if not started:
                    started = True
                    await send(start)
                await send({"type": "http.response.body", "body": data, "more_body": True})
        except ClientDisconnected:
            self.pool.discard(conn)
            if started:
                self.stats.client_gone += 1
            else:
                await _client_gone(self.stats, send)
        except UpstreamError as exc:
            self.pool.discard(conn)
            self.stats.failed(exc)
            if not started:
                await _reply(send, exc.status, f"{exc.kind}: {exc}")
                return
            raise  # the client must see a cut-off response, not a complete one
        except BaseException:
            self.pool.discard(conn)
            raise


def error_reply(message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and headers of the sidecar's own answer: the reason in both."""
    body = orjson.dumps({"error": message})
    reason = message[:300].replace("\r", " ").replace("\n", " ").encode("ascii", "replace")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
        (ERROR_HEADER, reason),
    ]
    return body, headers


async def _reply(send: Send, status: int, message: str) -> None:
    """The sidecar's own answer, with the reason in the body and in X-Inferwatch-Error."""
    body, headers = error_reply(message)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _client_gone(stats: UpstreamStats, send: Send) -> None:
    # Nobody reads this; it makes the middleware record nginx's 499 instead of no status.
    stats.client_gone += 1
    await send({"type": "http.response.start", "status": 499, "headers": []})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message: dict[str, Any] = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
