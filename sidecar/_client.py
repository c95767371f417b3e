"""The sidecar's HTTP/1.1 server protocol: uvicorn's, with limits on clients and a direct path.

:class:`TimedHttpProtocol` bounds how long and how much a client may send, and hands each request
that the direct path takes (``_direct``) to it instead of starting an ASGI task.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar
from urllib.parse import unquote

import httptools
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from ._direct import DirectExchange, DirectPath
from ._held_head import HeldHeadTransport

__all__ = ["CLIENT_TIMEOUT", "MAX_HEAD_BYTES", "TimedHttpProtocol"]

CLIENT_TIMEOUT = 60.0
"""Default of ``client_timeout``: seconds a client has to send a request head, and may fall silent
within a body or while it is sent a response (nginx's client_header_timeout, client_body_timeout
and send_timeout)."""
MAX_HEAD_BYTES = 64 * 1024
"""Default of ``max_head_bytes``: the largest request head (line and headers) read, else 431."""


def _answer(status: bytes, reason: str) -> bytes:
    body = b'{"error": "%s"}' % reason.encode("ascii")
    return (
        b"HTTP/1.1 %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        b"x-inferwatch-error: %s\r\nconnection: close\r\n\r\n%s"
        % (status, len(body), reason.encode("ascii"), body)
    )


_TIMEOUT = _answer(b"408 Request Timeout", "the client sent too slowly")
_TOO_LARGE = _answer(b"431 Request Header Fields Too Large", "the request head is too large")


class TimedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits on clients that it lacks.

    uvicorn times only idle keep-alive connections. Without this, a client that connects and
    says nothing, trickles its head, pauses mid-body or stops reading its response holds a
    connection for ever (and mid-body or mid-response an upstream connection too, of which there
    are ``upstream_max_connections``), and a head of any size is buffered whole. Here a head must
    arrive within :data:`CLIENT_TIMEOUT` of the connection or of its first byte, a body may not
    pause longer than that, nor may a client stop reading for longer, and a head may hold at most
    :data:`MAX_HEAD_BYTES` (plus one read): else 408 or 431, and the connection closes.
    """

    timeout = CLIENT_TIMEOUT
    max_head = MAX_HEAD_BYTES
    direct: ClassVar[DirectPath | None] = None  # the proxy's; the admin server has none

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._writes = HeldHeadTransport(transport, self.loop)
        self.raw_transport = transport  # the direct path's writes: it holds no head
        super().connection_made(self._writes)  # type: ignore[arg-type]
        # One timer per connection, moved lazily: each request only notes the time, and the
        # timer, when it fires early, waits out the rest. Setting and cancelling a timer for
        # each head and body cost about 3 µs per request; uvicorn's keep-alive timer, set and
        # cancelled for every response, is folded into it too. It never runs later than the
        # shorter of the two timeouts after it is set, so no wait is seen late.
        self._deadline: asyncio.TimerHandle | None = None
        self._span = min(self.timeout, self.timeout_keep_alive)
        self._since = 0.0  # when the wait for the client that the timer guards began
        self._stalled: asyncio.TimerHandle | None = None
        self._in_head = True  # waiting for the first request's head
        self._in_body = False
        self._idle = False  # between a response and the next request
        self._head_bytes = 0
        self._direct: DirectExchange | None = None  # the request on the direct path, if any
        self._arm()

    def data_received(self, data: bytes) -> None:
        was_in_head = self._in_head
        super().data_received(data)
        if self._in_head and was_in_head:  # every byte of this read belongs to the head
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head:
                self._refuse(_TOO_LARGE)
        elif self._in_body:  # its silence starts again
            self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._idle = True, 0, False
        self._arm()

    def on_response_complete(self) -> None:
        # uvicorn's, but for the keep-alive wait, which the connection's timer keeps.
        self.server_state.total_requests += 1
        if self.transport.is_closing():
            return
        self.flow.resume_reading()
        if self.pipeline:
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif not (self._in_head or self._in_body):  # else the next request has begun already
            self._idle = True
            self._arm()

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body = False, True
        if self.direct is None or not self._go_direct(self.direct):
            super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        direct = self._direct
        if direct is not None and direct is self.cycle:  # else a pipelined request's
            direct.body(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False  # the timer, if it fires, finds nothing to wait for
        direct = self._direct
        if direct is not None and direct is self.cycle:
            direct.request_done()
        else:
            super().on_message_complete()

    def _go_direct(self, path: DirectPath) -> bool:
        """Hand the request whose head just ended to the direct path, if it takes it."""
        cycle = self.cycle
        parser = self.parser
        if (
            (cycle is not None and not cycle.response_complete)  # pipelined: queued the ASGI way
            or self.expect_100_continue
            or parser.get_http_version() != "1.1"
            or parser.should_upgrade()
        ):
            return False
        method = parser.get_method()
        if method == b"HEAD" or method == b"CONNECT":
            return False
        scope = self.scope
        try:
            # As uvicorn fills the scope; what fails here fails there too, answered with a 400.
            parsed = httptools.parse_url(self.url)
            raw_path = parsed.path
            path_text = raw_path.decode("ascii")
        except (httptools.HttpParserError, UnicodeDecodeError):
            return False
        scope["method"] = method.decode("ascii")
        scope["path"] = self.root_path + (unquote(path_text) if "%" in path_text else path_text)
        scope["raw_path"] = self.root_path.encode("ascii") + raw_path
        scope["query_string"] = parsed.query or b""
        exchange = path.begin(self, scope, parser.should_keep_alive())  # type: ignore[arg-type]
        if exchange is None:
            return False
        if not exchange.finished:
            self._direct = exchange
        self.cycle = exchange  # type: ignore[assignment]  # what uvicorn's protocol looks at
        return True

    def direct_finished(self, exchange: DirectExchange) -> None:
        if self._direct is exchange:
            self._direct = None

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGIApp) -> None:
        self._writes.hold_next()  # the response's head waits for its first body bytes
        super()._start_asgi_task(cycle, app)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._direct is not None:
            self._direct.client_paused(True)
        if self._stalled is None:
            self._stalled = self.loop.call_later(self.timeout, self._stopped_reading)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._direct is not None:
            self._direct.client_paused(False)
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._direct is not None:
            self._direct.client_gone()
        self._disarm()
        if self._stalled is not None:
            self._stalled.cancel()
            self._stalled = None
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._since = self.loop.time()
        if self._deadline is None:
            self._deadline = self.loop.call_at(self._since + self._span, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._idle:
            span = self.timeout_keep_alive
        elif self._in_head or self._in_body:
            span = self.timeout
        else:
            return  # a response is under way: the upstream's timeout and _stalled guard it
        now = self.loop.time()
        due = self._since + span
        if due > now:  # the client spoke since the timer was set
            self._deadline = self.loop.call_at(min(due, now + self._span), self._expired)
            return
        if self._idle:
            self.transport.close()  # as uvicorn's keep-alive timeout does
            return
        if self._in_body and self.flow.read_paused:
            self._arm()  # the body waits for the upstream, not for the client
            return
        self._refuse(_TIMEOUT)

    def _stopped_reading(self) -> None:
        self._stalled = None
        # Nothing can be said to a client that does not read, and close() would wait for it to
        # read what is buffered: abort() drops it, and the proxy sees the client gone.
        self.transport.abort()

    def _refuse(self, answer: bytes) -> None:
        """Answer ``answer`` unless a response is under way, and close the connection."""
        cycle = self.cycle
        idle = cycle is None or cycle.response_complete
        if self._direct is not None:
            self._direct.client_gone()
        if self._in_body and cycle is not None:
            idle = not cycle.response_started
            # The app reading this body sees the client gone now, and its answer goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        self._in_head = self._in_body = False
        self._disarm()
        if not self.transport.is_closing():
            if idle:
                self.transport.write(answer)
            self.transport.close()
