"""One keep-alive HTTP/1.1 connection to the upstream: an asyncio protocol fed to httptools.

The parser's callbacks fill a small buffer that the ASGI proxy drains, or tell the direct path's
exchange (the connection's ``sink``) as they run; reading pauses when the client is slower than
the model, so a large response never piles up in memory.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

import httptools

__all__ = [
    "ClientDisconnected",
    "Connection",
    "Sink",
    "UpstreamClosed",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamTimeout",
    "UpstreamUnreachable",
]

_HIGH_WATER = 256 * 1024
_LOW_WATER = 64 * 1024


class UpstreamError(Exception):
    """The upstream failed this request; ``status`` is what the client gets if nothing was sent."""

    status = 502
    kind = "upstream error"
    label = "error"  # the reason label of inferwatch_upstream_errors_total


class UpstreamUnreachable(UpstreamError):
    kind = "upstream unreachable"
    label = "unreachable"


class UpstreamTimeout(UpstreamError):
    status = 504
    kind = "upstream timeout"
    label = "timeout"


class UpstreamClosed(UpstreamError):
    kind = "upstream closed the connection"
    label = "closed"


class UpstreamProtocolError(UpstreamError):
    kind = "invalid upstream response"
    label = "protocol"


class ClientDisconnected(Exception):
    """The client went away; the upstream request is abandoned."""


class Sink(Protocol):
    """What a connection tells, as it happens, to a request that is not reading it with
    :meth:`Connection.read` (the direct path)."""

    def upstream_head(self) -> None: ...

    def upstream_body(self, data: bytes) -> None: ...

    def upstream_done(self) -> None: ...

    def upstream_failed(self, error: BaseException) -> None: ...

    def upstream_flush(self) -> None: ...

    def upstream_writable(self) -> None: ...

    def upstream_awaited(self) -> bool: ...


def _expire(waiter: asyncio.Future[None], timeout: float) -> None:
    if not waiter.done():
        waiter.set_exception(UpstreamTimeout(f"no data from the upstream within {timeout:g} s"))


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class Connection(asyncio.Protocol):
    """A pooled connection; one request at a time, responses read with :meth:`read`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.open = False
        self.discarded = False
        self.served = 0  # requests this connection has answered completely
        self.idle_since = 0.0
        self._write_paused = False
        self._drain: asyncio.Future[None] | None = None
        # One timer per connection for the read timeout, moved lazily: a wait only notes when it
        # expires, and the timer, firing early, waits out the rest. A timer set and cancelled for
        # every wait cost about 3 µs each, and a request waits once or twice.
        self._timer: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._due_timeout = 0.0
        self.sink: Sink | None = None
        self._chunks: deque[bytes] = deque()
        self.length_framed = self.chunked = False  # what the response's head said of its body
        self.connection: list[bytes] = []  # its Connection headers' values
        self._begin(head_only=False)
        self.active = False

    def _begin(self, head_only: bool) -> None:
        self.active = True
        self.head_only = head_only
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.received = False
        self.keep_alive = True
        self.error: BaseException | None = None
        self._until_close = False
        self._chunks.clear()
        self._buffered = 0
        self._reading_paused = False
        self._waiter: asyncio.Future[None] | None = None
        self.sink = None
        self._expecting = False

    def begin(self, head_only: bool) -> None:
        """Reset the response state before a request is written."""
        self._begin(head_only)

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    def data_received(self, data: bytes) -> None:
        if not self.active:
            self._fail(UpstreamProtocolError("the upstream sent data nobody asked for"))
            return
        self.received = True
        sink = self.sink
        if sink is not None and self._expecting:
            self._due = self._loop.time() + self._due_timeout
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamProtocolError("the upstream switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"the upstream sent invalid HTTP: {exc}"))
        if sink is not None and self.sink is sink:
            sink.upstream_flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.active and not self.complete and self.error is None:
            if self._until_close and self.head_done:
                self.complete = True  # a body delimited by the connection's end
                self.keep_alive = False
            else:
                where = "while sending the response" if self.head_done else "before responding"
                detail = f" ({exc})" if exc else ""
                self.error = UpstreamClosed(f"the upstream closed the connection {where}{detail}")
        sink = self.sink
        if sink is not None:
            if self.complete:
                sink.upstream_done()
            elif self.error is not None:
                sink.upstream_failed(self.error)
        self._wake()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self.sink is not None:
            self.sink.upstream_writable()
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    # ------------------------------------------------------------------ httptools callbacks

    def on_message_begin(self) -> None:
        self.headers = []
        self.length_framed = self.chunked = False
        if self.connection:
            self.connection = []

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self.length_framed = True
        elif name == b"transfer-encoding":
            self.chunked = True
        elif name == b"connection":
            self.connection.append(value)
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # an interim response; the real one follows
        self.status = status
        self.head_done = True
        self.keep_alive = self._parser.should_keep_alive()
        if self.head_only:
            # httptools cannot be told that a HEAD response has no body; never reuse it.
            self.complete = True
            self.keep_alive = False
        elif status not in (204, 304):
            self._until_close = not (self.length_framed or self.chunked)
        if self.sink is not None:
            self.sink.upstream_head()
        self._wake()

    def on_body(self, body: bytes) -> None:
        if self.sink is not None:
            self.sink.upstream_body(body)
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.head_done:
            self.complete = True
            if self.sink is not None:
                self.sink.upstream_done()
            self._wake()

    # ------------------------------------------------------------------ the proxy's side

    def write(self, data: bytes) -> None:
        if self.transport is None or not self.open:
            raise self.error or UpstreamClosed("the upstream closed the connection")
        self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the upstream reads slower than the client sends."""
        if self._write_paused and self.open:
            self._drain = self._loop.create_future()
            try:
                await self._drain
            finally:
                self._drain = None
        if self.error is not None:
            raise self.error
        if not self.open:
            raise UpstreamClosed("the upstream closed the connection while reading the request")

    async def wait_head(self, timeout: float) -> None:
        """Wait for the response's status line and headers."""
        while not self.head_done:
            if self.error is not None:
                raise self.error
            await self._wait(timeout)

    async def settle(self, delay: float) -> None:
        """Wait up to ``delay`` for body bytes or the body's end; never fails."""
        if self._chunks or self.complete or self.error is not None:
            return
        waiter = self._waiter = self._loop.create_future()
        timer = self._loop.call_later(delay, _settle, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    @property
    def write_paused(self) -> bool:
        """Whether the upstream reads slower than it is sent to."""
        return self._write_paused

    @property
    def drained(self) -> bool:
        """The whole response was received and handed out."""
        return self.complete and not self._chunks

    def buffered(self) -> bool:
        """Whether :meth:`read` would return without waiting."""
        return bool(self._chunks) or self.complete or self.error is not None

    async def read(self, timeout: float) -> bytes:
        """The body bytes received so far (waiting for some); ``b""`` once the body is done."""
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                if self._reading_paused and self.transport is not None:
                    self._reading_paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return b""
            if self.error is not None:
                raise self.error
            await self._wait(timeout)

    def abort(self, error: BaseException) -> None:
        """Fail whatever waits on this connection and close it."""
        self._fail(error)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.open = False

    def expect(self, timeout: float) -> None:
        """Fail the request unless the upstream sends something within ``timeout`` of now or of
        its last data (for a ``sink``, which is not waiting in :meth:`read`)."""
        self._expecting = True
        due = self._due = self._loop.time() + timeout
        self._due_timeout = timeout
        if self._timer is None:
            self._timer = self._loop.call_at(due, self._on_timer)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.close()
        if self.sink is not None:
            self.sink.upstream_failed(self.error)
        self._wake()

    async def _wait(self, timeout: float) -> None:
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        due = self._due = loop.time() + timeout
        self._due_timeout = timeout
        if self._timer is None or self._timer.when() > due:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(due, self._on_timer)
        try:
            await waiter
        finally:
            self._waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._expecting and self.sink is not None:
            now = self._loop.time()
            if now >= self._due and not self.sink.upstream_awaited():
                # The client is not reading, so neither is the proxy: not the upstream's fault.
                self._due = now + self._due_timeout
            if now < self._due:
                self._timer = self._loop.call_at(self._due, self._on_timer)
                return
            self._fail(UpstreamTimeout(f"no data from the upstream within {self._due_timeout:g} s"))
            return
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._loop.time() < self._due:  # a later wait moved the deadline on
            self._timer = self._loop.call_at(self._due, self._on_timer)
            return
        _expire(waiter, self._due_timeout)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
