"""The upstream: its fixed address and a lean pool of keep-alive HTTP/1.1 connections to it.

Chosen over httpx and aiohttp by measurement (docs/sidecar.md): an acquire is a ``deque.pop``,
a request is one ``transport.write`` when its body arrived with its headers, and a response is
parsed by httptools in the protocol callback, with no stream wrappers in between.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from ._connection import (
    ClientDisconnected,
    Connection,
    UpstreamClosed,
    UpstreamTimeout,
    UpstreamUnreachable,
)

__all__ = ["Upstream", "UpstreamPool"]

Receive = Callable[[], Awaitable[dict[str, Any]]]

NO_BODY = 0
CHUNKED = -1
REPLAY_LIMIT = 64 * 1024  # request bodies kept for one retry on a stale keep-alive connection


@dataclass(frozen=True)
class Upstream:
    """Where the sidecar forwards to, fixed at start: nothing in a request can change it."""

    url: str
    scheme: str
    host: str
    port: int
    base_path: bytes
    host_header: bytes

    @classmethod
    def parse(cls, url: str) -> Upstream:
        """Check and split an ``http(s)://host[:port][/base]`` URL; ValueError says what's wrong."""
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https"):
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        if not parts.hostname:
            raise ValueError(f"{url!r} names no host")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise ValueError(f"{url!r} must not carry credentials, a query or a fragment")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise ValueError(f"{url!r} has a bad port") from exc
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        default = port == (443 if parts.scheme == "https" else 80)
        return cls(
            url=f"{parts.scheme}://{shown}{'' if default else f':{port}'}{parts.path.rstrip('/')}",
            scheme=parts.scheme,
            host=host,
            port=port,
            base_path=parts.path.rstrip("/").encode("ascii"),
            host_header=(shown if default else f"{shown}:{port}").encode("ascii"),
        )


class UpstreamPool:
    """Keep-alive connections to one upstream, most recently used first, at most ``limit``."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        limit: int = 100,
        connect_timeout: float = 5.0,
        read_timeout: float = 300.0,
        keepalive: float = 4.0,
    ) -> None:
        self.upstream = upstream
        self.limit = limit
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.keepalive = keepalive
        self.opened = 0  # connections made since start
        self.count = 0  # connections open or being opened
        self._idle: deque[Connection] = deque()
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._ssl = ssl.create_default_context() if upstream.scheme == "https" else None
        self._closed = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def waiting(self) -> bool:
        """Whether requests wait for a connection (all ``limit`` are busy)."""
        return bool(self._waiters)

    async def request(
        self,
        method: str,
        head: bytes,
        receive: Receive,
        body: int,
        on_sent: Callable[[Connection], None] | None = None,
    ) -> Connection:
        """Send one request (``head``, then its body streamed from ``receive``), and wait for the
        response head.

        ``body`` is the body's length, ``NO_BODY`` or ``CHUNKED``. The returned connection holds
        the response; read it with :meth:`Connection.read`, then :meth:`release` it.
        """
        chunked = body == CHUNKED
        first, more = b"", False
        if body != NO_BODY:
            first, more = await _next_chunk(receive)
        replay: list[bytes] | None = [first]
        size = len(first)
        for attempt in (1, 2):
            conn = await self.acquire()
            reused = conn.served > 0
            conn.begin(head_only=method == "HEAD")
            pending = more
            try:
                if chunked:
                    tail = b"" if more else b"0\r\n\r\n"
                    conn.write(head + _chunk(first) + tail if first else head + tail)
                else:
                    conn.write(head + first if first else head)
                while pending and not conn.head_done:  # an early answer ends the upload
                    await conn.drain()
                    data, pending = await _next_chunk(receive)
                    if replay is not None:
                        size += len(data)
                        if size <= REPLAY_LIMIT:
                            replay.append(data)
                        else:
                            replay = None
                    if chunked:
                        conn.write(_chunk(data) + (b"" if pending else b"0\r\n\r\n"))
                    elif data:
                        conn.write(data)
                if pending:
                    conn.keep_alive = False
                if on_sent is not None:
                    on_sent(conn)
                await conn.wait_head(self.read_timeout)
            except UpstreamClosed:
                self.discard(conn)
                # A kept-alive connection the upstream closed as we wrote to it: nothing was
                # processed, so the request goes once more on a fresh connection.
                if attempt == 1 and reused and not conn.received and replay is not None:
                    first, more = b"".join(replay), pending
                    continue
                raise
            except BaseException:
                self.discard(conn)
                raise
            return conn
        raise AssertionError("unreachable")  # pragma: no cover

    def release(self, conn: Connection) -> None:
        """Return a connection whose response was read to the end."""
        conn.active = False
        conn.sink = None
        if conn.complete and conn.keep_alive and conn.open and not self._closed:
            conn.served += 1
            conn.idle_since = conn.loop.time()
            self._idle.append(conn)
            self._wake_one()
        else:
            self.discard(conn)

    def discard(self, conn: Connection) -> None:
        """Close a connection that must not be reused."""
        conn.active = False
        conn.sink = None
        conn.close()
        if not conn.discarded:
            conn.discarded = True
            self.count -= 1
            self._wake_one()

    async def close(self) -> None:
        """Close every idle connection; busy ones close when released."""
        self._closed = True
        while self._idle:
            self.discard(self._idle.pop())

    def take_idle(self) -> Connection | None:
        """An idle connection, or None when a request would have to connect or wait."""
        idle = self._idle
        while idle:
            conn = idle.pop()
            # Connections carry the loop: asyncio.get_running_loop() is a getpid() syscall.
            if conn.open and conn.loop.time() - conn.idle_since < self.keepalive:
                return conn
            self.discard(conn)
        return None

    async def acquire(self) -> Connection:
        """An idle connection, a new one, or the next one released when ``limit`` are open."""
        while True:
            conn = self.take_idle()
            if conn is not None:
                return conn
            loop = asyncio.get_running_loop()
            if self.count < self.limit:
                return await self._connect(loop)
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, self.read_timeout)
            except TimeoutError:
                raise UpstreamTimeout(
                    f"no upstream connection free within {self.read_timeout:g} s "
                    f"(upstream_max_connections={self.limit})"
                ) from None
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken as it was cancelled: pass the turn on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> Connection:
        self.count += 1
        upstream = self.upstream
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(
                    lambda: Connection(loop),
                    upstream.host,
                    upstream.port,
                    ssl=self._ssl,
                    server_hostname=upstream.host if self._ssl else None,
                ),
                self.connect_timeout,
            )
        except TimeoutError:
            self.count -= 1
            raise UpstreamTimeout(
                f"connecting to {upstream.host}:{upstream.port} took over "
                f"{self.connect_timeout:g} s"
            ) from None
        except OSError as exc:
            self.count -= 1
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise UpstreamUnreachable(
                f"cannot connect to {upstream.host}:{upstream.port}: {reason}"
            ) from None
        except BaseException:
            self.count -= 1
            raise
        self.opened += 1
        return conn

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data) if data else b""


async def _next_chunk(receive: Receive) -> tuple[bytes, bool]:
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientDisconnected("the client went away while sending the request body")
    return message.get("body", b""), message.get("more_body", False)
