"""The least a pure-ASGI middleware does to hand every request's timing to another process.

It times each request, keeps its status from ``send``, packs (latency, status) into a buffer and
writes the buffer out once per 256 requests (to ``/dev/null``: the reading side is not the
worker's cost). No capture, no route label, no request ID, no monitor API: the ``timing`` mode of
the hand-off floor probe, as a variant the benchmarks run beside ``MonitorMiddleware`` in the same
run, to tell what any monitor written in Python costs a worker from what inferwatch adds to it.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any

__all__ = ["FloorMiddleware"]

RECORD = struct.Struct("<dH")
"""One request's record: its latency in seconds and its status."""
BATCH = 256
"""Requests per write."""


class FloorMiddleware:
    """Time every HTTP request and hand its timing over in batches to the file descriptor
    ``out`` (``/dev/null`` by default); nothing more."""

    def __init__(self, app: Any, out: int | None = None) -> None:
        self.app = app
        self._buffer = bytearray()
        self._count = 0
        self._out = os.open(os.devnull, os.O_WRONLY) if out is None else out

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [0]

        async def timed_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        await self.app(scope, receive, timed_send)
        self._buffer += RECORD.pack(time.perf_counter() - started, status[0])
        self._count += 1
        if self._count >= BATCH:
            os.write(self._out, self._buffer)
            self._buffer = bytearray()
            self._count = 0
