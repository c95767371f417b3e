"""The least a reverse proxy written in Python does per request: ``proxy_overhead.py``'s ``floor``.

uvloop, httptools on both sides, one kept upstream connection per client connection, the request's
and the response's heads rebuilt from their parsed headers and the bodies passed on as they come.
No pool, no timeouts, no hop-by-hop rules, no request IDs, no monitoring: not a proxy to run, but
a measure of what any proxy in Python pays before it does anything of its own.

    python benchmarks/_lib/floor_proxy.py PORT http://127.0.0.1:UPSTREAM_PORT
"""

from __future__ import annotations

import asyncio
import sys
from urllib.parse import urlsplit

import httptools
import uvloop

_SKIP = frozenset({b"connection", b"keep-alive", b"transfer-encoding"})  # hop by hop


class Upstream(asyncio.Protocol):
    """One connection to the model server, answering the client that opened it."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.parts: list[bytes] = []
        self.head: bytes | None = None
        self.chunked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()

    def on_message_begin(self) -> None:
        self.parts = [b""]  # the status line, once the head is complete
        self.chunked = False

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"transfer-encoding":
            self.chunked = True
        elif name not in _SKIP:
            self.parts += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        self.parts[0] = b"HTTP/1.1 %d \r\n" % self.parser.get_status_code()
        if self.chunked:
            self.parts.append(b"transfer-encoding: chunked\r\n")
        self.parts.append(b"\r\n")
        self.head = b"".join(self.parts)

    def on_body(self, body: bytes) -> None:
        if self.chunked:
            body = b"%x\r\n%s\r\n" % (len(body), body)
        head, self.head = self.head, None
        self.client.transport.write(head + body if head else body)

    def on_message_complete(self) -> None:
        tail = b"0\r\n\r\n" if self.chunked else b""
        head, self.head = self.head, None
        if head or tail:
            self.client.transport.write((head or b"") + tail)


class Client(asyncio.Protocol):
    """One client connection; its requests go, one at a time, to its own upstream connection."""

    upstream: tuple[str, int, bytes]

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport
        self.up: Upstream | None = None
        self.waiting: list[bytes] = []
        self.parts: list[bytes] = []
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        host, port, _ = self.upstream
        connect = asyncio.get_running_loop().create_connection(lambda: Upstream(self), host, port)
        asyncio.ensure_future(connect).add_done_callback(self._connected)

    def _connected(self, future: asyncio.Future[tuple[asyncio.BaseTransport, Upstream]]) -> None:
        if future.exception() is not None:
            self.transport.close()
            return
        self.up = future.result()[1]
        if self.waiting:
            self.up.transport.write(b"".join(self.waiting))  # type: ignore[union-attr]
            self.waiting = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.up is not None and self.up.transport is not None:
            self.up.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"host":
            value = self.upstream[2]
        if name not in _SKIP:
            self.parts += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        line = b"%s %s HTTP/1.1\r\n" % (self.parser.get_method(), self.url)
        self.parts.insert(0, line)
        self.parts.append(b"\r\n")

    def on_body(self, body: bytes) -> None:
        self.parts.append(body)

    def on_message_complete(self) -> None:
        data, self.parts = b"".join(self.parts), []
        if self.up is not None and self.up.transport is not None:
            self.up.transport.write(data)
        else:
            self.waiting.append(data)


async def serve(port: int, upstream: str) -> None:
    url = urlsplit(upstream)
    Client.upstream = (url.hostname or "127.0.0.1", url.port or 80, url.netloc.encode("ascii"))
    server = await asyncio.get_running_loop().create_server(Client, "127.0.0.1", port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), sys.argv[2]))
