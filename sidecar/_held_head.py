"""A response head that leaves with the first bytes of its body: one write instead of two.

uvicorn writes a response's head as soon as the app sends ``http.response.start``, and its body
in a second write. On loopback, and so between containers of one pod, each write is a send(2)
that also runs the receiving socket's side of TCP and wakes the reader: two per response where
one would do. :class:`HeldHeadTransport` stands in for a connection's transport and holds the
head until the next write, which in a proxied response comes in the same step of the event loop.
A head whose body is not ready (a stream, a slow upstream) leaves at the end of that step.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["HeldHeadTransport"]

_JOIN_UP_TO = 64 * 1024  # a larger first write goes out as a second buffer instead of a copy


class HeldHeadTransport:
    """Wraps one connection's transport; :meth:`hold_next` makes the next write wait.

    Every write on the connection goes through here, so none overtakes a held head.
    """

    __slots__ = ("_held", "_hold", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._hold = False
        self._held: bytes | None = None

    def hold_next(self) -> None:
        """Hold the next write (a response's head) until the one after it, or this step's end."""
        self._hold = True

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(data) <= _JOIN_UP_TO:
                self._transport.write(held + data)
            else:
                self._transport.writelines((held, data))
        elif self._hold:
            self._hold = False
            self._held = bytes(data)
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held = None  # abort drops whatever is buffered
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        # Everything else (pausing, extra info) is the transport's own.
        return getattr(self._transport, name)
