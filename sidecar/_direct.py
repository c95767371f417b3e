"""The proxy's direct path: a request forwarded by callbacks, with no ASGI call in between.

Through uvicorn's ASGI cycle, a proxied request is a task, a stack of coroutines (the request-ID
layer, the middleware, the proxy) and a message dict for every step; for a proxy that only moves
bytes, that was most of its CPU. Here the client's protocol (``_client.TimedHttpProtocol``) feeds a
:class:`DirectExchange` from its parser's callbacks, and the upstream connection answers it from
its own: the request goes upstream as it arrives, the response streams back as it comes, and the
capture is noted on the way, as the middleware notes it. A request the direct path does not take
(HTTP/1.0, HEAD, CONNECT, ``Expect``, a chunked upload, a refused target, a pipelined request,
monitoring off) goes the ASGI way, through the same middleware and the same proxy.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Protocol

from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from inferwatch.middleware import MonitorMiddleware
from inferwatch.middleware.capture.request_ids import new_request_id

from ._connection import Connection, UpstreamClosed, UpstreamError
from ._headers import request_head, response_drop, upstream_target
from ._proxy import ERROR_HEADER, HEAD_DELAY, Proxy, error_reply
from ._upstream import CHUNKED, NO_BODY, REPLAY_LIMIT

if TYPE_CHECKING:
    from uvicorn.protocols.utils import FlowControl

    from inferwatch.middleware.capture.exchange import Exchange

__all__ = ["DirectExchange", "DirectPath"]

logger = logging.getLogger("inferwatch")

_REQUEST_ID = b"x-request-id"
_CONTENT_TYPE = b"content-type"
_CLOSE = b"connection: close\r\n"
_LAST_CHUNK = b"0\r\n\r\n"
_CUT_BODY = b"Internal Server Error"
_CUT = ((b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21"))


class ClientSide(Protocol):
    """What a direct exchange needs of the client's connection (``_client.TimedHttpProtocol``)."""

    raw_transport: asyncio.Transport
    flow: FlowControl

    def on_response_complete(self) -> None: ...

    def direct_finished(self, exchange: DirectExchange) -> None: ...


class DirectPath:
    """What every direct exchange of one proxy shares: its monitor, its pool, its figures."""

    def __init__(self, monitor: MonitorMiddleware, proxy: Proxy) -> None:
        self.monitor = monitor
        self.pool = proxy.pool
        self.stats = proxy.stats
        self.timeout = proxy.pool.read_timeout
        self._base = proxy.pool.upstream.base_path
        self._host = proxy.pool.upstream.host_header
        self.tasks: set[asyncio.Task[None]] = set()  # connecting for a request, held till done
        self.in_flight: set[DirectExchange] = set()

    def cut(self) -> None:
        """End every request still in flight (the drain is over)."""
        for exchange in list(self.in_flight):
            exchange.cut()

    def begin(
        self, protocol: ClientSide, scope: dict[str, Any], keep_alive: bool
    ) -> DirectExchange | None:
        """Start forwarding the request whose head ``scope`` holds; None to leave it to ASGI."""
        target = upstream_target(scope, self._base)
        if target is None:
            return None
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        request_id = request_type = None
        for name, value in headers:
            if name == _REQUEST_ID:
                request_id = value  # the last one counts, as in the middleware
            elif name == _CONTENT_TYPE:
                request_type = value
        if request_id is None or not (0 < len(request_id) <= 128 and request_id.isascii()):
            if request_id is not None:
                headers = scope["headers"] = [item for item in headers if item[0] != _REQUEST_ID]
            request_id = new_request_id()
            headers.append((_REQUEST_ID, request_id))
        line = b"%s %s HTTP/1.1\r\n" % (scope["method"].encode("ascii"), target)
        head, body = request_head(scope, self._host, line)
        if body == CHUNKED:
            return None
        capture = self.monitor.exchange(scope, request_id, request_type)
        if capture is None:
            return None
        pool = self.pool
        conn = None if pool.waiting else pool.take_idle()
        return DirectExchange(
            self,
            protocol,
            capture,
            conn,
            head,
            body,
            keep_alive,
            b"x-request-id: %s\r\n" % request_id,
        )


class _NoEvent:
    """uvicorn's protocol sets its cycle's message event when the client leaves; nobody waits."""

    def set(self) -> None:
        pass


class DirectExchange:
    """One request on the direct path, standing in for uvicorn's cycle on the client's protocol.

    The client's side calls :meth:`body`, :meth:`request_done`, :meth:`client_gone` and
    :meth:`client_paused`; the upstream connection calls the ``upstream_*`` methods.
    """

    __slots__ = (
        "_chunked", "_connecting", "_head", "_head_timer", "_id_line", "_out", "_replay",
        "_replay_size", "_retried",
        "_reused", "_sent_all", "capture", "conn", "disconnected", "finished", "keep_alive",
        "path", "protocol", "response_complete", "response_started", "transport",
    )  # fmt: skip

    message_event = _NoEvent()

    def __init__(
        self,
        path: DirectPath,
        protocol: ClientSide,
        capture: Exchange,
        conn: Connection | None,
        head: bytes,
        length: int,
        keep_alive: bool,
        id_line: bytes,
    ) -> None:
        self.path = path
        self._id_line = id_line  # the response's X-Request-ID header
        self.protocol = protocol
        self.transport = protocol.raw_transport
        self.capture = capture
        self.keep_alive = keep_alive  # uvicorn's shutdown() turns it off: the last response
        self.response_started = self.response_complete = self.disconnected = False
        self.finished = False
        self.conn: Connection | None = None
        self._sent_all = length == NO_BODY  # the whole request is in hand
        self._out = [head]  # request bytes not yet written upstream: the head waits for the body
        self._replay: list[bytes] | None = [head]  # for one retry on a stale connection
        self._replay_size = 0
        self._retried = self._reused = self._connecting = False
        self._head: bytes | None = None  # the response's head, held for its first body bytes
        self._head_timer: asyncio.TimerHandle | None = None
        self._chunked = False
        path.in_flight.add(self)
        if conn is not None:
            self._use(conn)
        else:
            self._connect()

    # ------------------------------------------------------------------ the client's side

    def body(self, data: bytes) -> None:
        if self.finished:
            return
        self.capture.took(data)
        conn = self.conn
        if conn is not None and conn.head_done:
            return  # the upstream answered early: the rest of the upload goes nowhere
        replay = self._replay
        if replay is not None:
            self._replay_size += len(data)
            if self._replay_size <= REPLAY_LIMIT:
                replay.append(data)
            else:
                self._replay = None
        self._out.append(data)
        if conn is not None:
            self._push(conn)

    def request_done(self) -> None:
        if self.finished:
            return
        self._sent_all = True
        conn = self.conn
        if conn is not None:
            self._push(conn)
            if not self.finished:
                conn.expect(self.path.timeout)

    def client_gone(self) -> None:
        """The client left (or was cut off): the upstream request is abandoned."""
        self.disconnected = True
        if self.finished:
            return
        self.path.stats.client_gone += 1
        if not self.response_started:
            self.capture.status = 499  # nginx's code, as the ASGI path records it
        if self.conn is not None:
            self.path.pool.discard(self.conn)
            self.conn = None
        self._finish(None)

    def client_paused(self, paused: bool) -> None:
        """The client stopped or started again reading the response: so does the upstream's."""
        conn = self.conn
        if conn is not None and conn.open and conn.transport is not None:
            if paused:
                conn.transport.pause_reading()
            else:
                conn.transport.resume_reading()

    # ------------------------------------------------------------------ the upstream's side

    def upstream_head(self) -> None:
        conn = self.conn
        assert conn is not None
        if not self._sent_all:
            conn.keep_alive = False  # the upload stops here, so the connection cannot go on
        status = conn.status
        # The client's head in one pass over the upstream's headers, noted for the capture as
        # Exchange.started notes them: three passes (the end-to-end headers, the capture's,
        # the head's bytes) cost 4 % of the proxy's instructions.
        drop = response_drop(status, conn.chunked, conn.connection)
        parts = [STATUS_LINE[status] if status in STATUS_LINE else b"HTTP/1.1 %d \r\n" % status]
        content_type = error = None
        for item in conn.headers:
            name = item[0]
            if name in drop or name == _REQUEST_ID:
                continue
            if name == _CONTENT_TYPE:
                content_type = item[1]
            elif name == ERROR_HEADER:
                error = item[1]
            parts += (name, b": ", item[1], b"\r\n")
        self.capture.noted(status, content_type, error)
        parts.append(self._id_line)
        if status >= 200 and status not in (204, 304):
            # A length passes through; a chunked body, or one that ends with the connection,
            # is chunked again for the client.
            self._chunked = conn.chunked or not conn.length_framed
            if self._chunked:
                parts.append(b"transfer-encoding: chunked\r\n")  # as uvicorn frames it
        if not self.keep_alive:
            parts.append(_CLOSE)
        parts.append(b"\r\n")
        # Not started yet for the client: the head waits for the body (``upstream_flush``).
        self._head = b"".join(parts)

    def upstream_body(self, data: bytes) -> None:
        if self.finished:
            return
        self.capture.gave(data)
        if self._chunked:
            data = b"%x\r\n%s\r\n" % (len(data), data)
        self.transport.write(self._with_head(data))

    def upstream_flush(self) -> None:
        # A head that came without body bytes waits a moment for them, as the ASGI path's does:
        # one write instead of two, and an upstream that dies right after its head still gets
        # the client a clean 502 instead of a head with no body.
        if self._head is not None and self._head_timer is None and not self.finished:
            self._head_timer = asyncio.get_running_loop().call_later(HEAD_DELAY, self._send_head)

    def _send_head(self) -> None:
        self._head_timer = None
        if self._head is not None and not self.finished:
            self.transport.write(self._with_head(b""))

    def _with_head(self, data: bytes) -> bytes:
        """``data`` after the response's head, if that is still held: the response starts."""
        head = self._head
        if head is None:
            return data
        self._head = None
        self.response_started = True
        return head + data

    def upstream_done(self) -> None:
        if self.finished:
            return
        conn = self.conn
        assert conn is not None
        self.conn = None
        self.path.pool.release(conn)  # not kept where the upload was cut (upstream_head)
        # Handed over before the last byte leaves: a client that has its response knows that the
        # capture is in the collector's hands, which is what a read-your-writes read needs.
        self._finish(None)
        tail = self._with_head(_LAST_CHUNK if self._chunked else b"")
        if tail:
            self.transport.write(tail)
        self._complete()

    def upstream_failed(self, error: BaseException) -> None:
        if self.finished:
            return
        conn = self.conn
        if conn is not None:
            self.conn = None
            self.path.pool.discard(conn)
            if (
                isinstance(error, UpstreamClosed)
                and self._reused
                and not conn.received
                and self._replay is not None
                and not self._retried
            ):
                # A kept-alive connection the upstream closed as we wrote to it: nothing was
                # processed, so the request goes once more on a fresh connection.
                self._retried = True
                self._out = list(self._replay)
                self._connect()
                return
        if isinstance(error, UpstreamError):
            self.path.stats.failed(error)
            message = f"{error.kind}: {error}"
            status = error.status
        else:  # pragma: no cover - the connection fails only with UpstreamError
            logger.error("inferwatch: the direct path failed: %r", error)
            message, status = "upstream error: the proxy failed", 502
        if self.response_started:
            self._cut_off(type(error).__name__)
            return
        body, headers = error_reply(message)
        headers = self.capture.started(status, headers)
        self.capture.gave(body)
        self._finish(None)
        self.transport.write(_response_head(status, headers, self.keep_alive) + body)
        self._complete()

    def upstream_writable(self) -> None:
        if not self.finished and not self._connecting:
            self.protocol.flow.resume_reading()

    def upstream_awaited(self) -> bool:
        """Whether the upstream is to send now: not while the client does not read."""
        return not self.protocol.flow.write_paused

    # ------------------------------------------------------------------ inside

    def _use(self, conn: Connection) -> None:
        conn.begin(head_only=False)
        conn.sink = self
        self.conn = conn
        self._reused = conn.served > 0
        if self._sent_all or len(self._out) > 1:
            self._push(conn)
            if self._sent_all and not self.finished:
                conn.expect(self.path.timeout)

    def _push(self, conn: Connection) -> None:
        out = self._out
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        try:
            conn.write(data)
        except UpstreamError as exc:
            self.upstream_failed(exc)
            return
        if conn.write_paused:
            self.protocol.flow.pause_reading()  # the upstream reads slower than the client sends

    def _connect(self) -> None:
        self._connecting = True
        self.protocol.flow.pause_reading()  # what arrives meanwhile waits in the kernel
        task = asyncio.get_running_loop().create_task(self._connected())
        self.path.tasks.add(task)
        task.add_done_callback(self.path.tasks.discard)

    async def _connected(self) -> None:
        pool = self.path.pool
        try:
            conn = await pool.acquire()
        except UpstreamError as exc:
            self._connecting = False
            self.upstream_failed(exc)
            return
        self._connecting = False
        if self.finished:  # the client left meanwhile
            pool.discard(conn)
            return
        self.protocol.flow.resume_reading()
        self._use(conn)

    def cut(self) -> None:
        """End this request as uvicorn ends an ASGI one the drain did not see finish: a 500
        where nothing was sent yet, else a cut-off response; recorded alike."""
        if self.finished:
            return
        if self.conn is not None:
            self.path.pool.discard(self.conn)
            self.conn = None
        self.keep_alive = False
        if self.response_started:
            self._cut_off("CancelledError")
            return
        headers = self.capture.started(500, _CUT)
        self._finish("CancelledError")
        self.transport.write(_response_head(500, headers, False) + _CUT_BODY)
        self._complete()

    def _cut_off(self, error: str) -> None:
        """End a response already under way so that the client sees it cut off, not whole."""
        self._finish(error)
        self.transport.close()
        self.response_complete = True

    def _finish(self, error: str | None) -> None:
        self.finished = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        self.path.in_flight.discard(self)
        self.path.monitor.done(self.capture, error)
        self.protocol.direct_finished(self)

    def _complete(self) -> None:
        self.response_complete = True
        if not self.keep_alive:
            self.transport.close()
        self.protocol.on_response_complete()


def _response_head(status: int, headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
    lines = [STATUS_LINE[status] if status in STATUS_LINE else b"HTTP/1.1 %d \r\n" % status]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    if not keep_alive:
        lines.append(_CLOSE)
    lines.append(b"\r\n")
    return b"".join(lines)
