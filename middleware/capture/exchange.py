"""One request as the middleware sees it: its timing, its body chunks, its response's head.

A single object with slots holds the request's state, and its bound ``receive`` and ``send``
wrap the server's. Closures over a dozen variables were tried first: each variable is a cell,
and those twenty-odd objects per request, alive while the request is, made the model process's
young garbage collections about 40 % more frequent, and its full collections (the p99 of a
FastAPI app) more frequent with them.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from starlette.types import Message, Receive, Scope, Send

__all__ = ["Exchange"]

Header = tuple[bytes, bytes]

logger = logging.getLogger("inferwatch")

_REQUEST_ID = b"x-request-id"
_CONTENT_TYPE = b"content-type"
_ERROR = b"x-inferwatch-error"
_perf_counter = time.perf_counter
_random = random.random


class Exchange:
    """The state of one monitored request; :meth:`record` hands it to ``put`` once.

    A body's chunks are kept while the body's size is within ``max_body``; past it the body
    counts as cut (its size says so), and what was kept is dropped at :meth:`record`.
    """

    __slots__ = (
        "_first_byte", "_max_body", "_put", "_rate", "_received", "_reported_error",
        "_request_chunks", "_request_id", "_request_size", "_request_type", "_response_chunks",
        "_response_size", "_response_type", "_route", "_scope", "_send", "_started", "recorded",
        "status",
    )  # fmt: skip

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: bytes,
        request_type: bytes | None,
        put: Callable[[tuple[Any, ...]], Any],
        route: Callable[[Scope, int], str],
        rate: float,
        max_body: int,
    ) -> None:
        self._started = _perf_counter()
        self._scope = scope
        self._received = receive
        self._send = send
        self._request_id = request_id
        self._request_type = request_type
        self._put = put
        self._route = route
        self._rate = rate  # 1.0 and above: every request; 0.0 and below: none but errors
        self._max_body = max_body
        self._request_chunks: list[bytes] = []
        self._request_size = 0
        self._response_chunks: list[bytes] = []
        self._response_size = 0
        self._response_type: bytes | None = None
        self._first_byte: float | None = None
        self._reported_error: bytes | None = None  # the sidecar's reason for a 502 or 504
        self.status = 0
        self.recorded = False

    async def receive(self) -> Message:
        message = await self._received()
        body = message.get("body")
        if body:  # took(), written out: one call less per body message
            size = self._request_size = self._request_size + len(body)
            if size <= self._max_body:
                self._request_chunks.append(body)
        return message

    def took(self, body: bytes) -> None:
        """Note one chunk of the request's body."""
        size = self._request_size = self._request_size + len(body)
        if size <= self._max_body:
            self._request_chunks.append(body)

    def send(self, message: Message) -> Awaitable[None]:
        # A plain method returning send's awaitable: one coroutine less per message, and the
        # capture is still handed over before the last message is sent. gave() is written out
        # here: one call less on every body message.
        kind = message["type"]
        if kind == "http.response.body":
            body = message.get("body")
            if body:
                if self._first_byte is None:
                    self._first_byte = _perf_counter() - self._started
                size = self._response_size = self._response_size + len(body)
                if size <= self._max_body:
                    self._response_chunks.append(body)
            if not message.get("more_body", False) and self.status < 500 and not self.recorded:
                # Before the last byte leaves: a client that has its response knows that the
                # capture is handed over, which is what a read-your-writes read needs. A 5xx
                # waits for the app to return: an exception may follow to name it.
                self.record(None)
        elif kind == "http.response.start":
            message["headers"] = self.started(message["status"], message.get("headers", ()))
        return self._send(message)

    def started(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> list[Header]:
        """Note the response's status and head; return its headers with the request's ID."""
        self.status = status
        out = []
        for item in headers:
            key = item[0].lower()
            if key == _REQUEST_ID:
                continue
            if key == _CONTENT_TYPE:
                self._response_type = item[1]
            elif key == _ERROR:
                self._reported_error = item[1]
            out.append(item)
        out.append((_REQUEST_ID, self._request_id))
        return out

    def noted(self, status: int, content_type: bytes | None, error: bytes | None) -> None:
        """Note the response's status, content type and ``X-Inferwatch-Error``, for a server that
        writes the response's head itself (the sidecar's direct path, which adds the request's
        ID and drops any other); else :meth:`started`."""
        self.status = status
        self._response_type = content_type
        self._reported_error = error

    def gave(self, body: bytes) -> None:
        """Note one chunk of the response's body."""
        if self._first_byte is None:
            self._first_byte = _perf_counter() - self._started
        size = self._response_size = self._response_size + len(body)
        if size <= self._max_body:
            self._response_chunks.append(body)

    def record(self, error: str | None) -> None:
        """Hand over one tuple: a capture when sampled (it carries the timing too), else the
        timing alone. Appending it is atomic; the sink's thread does the rest."""
        self.recorded = True
        latency = _perf_counter() - self._started
        scope, status = self._scope, self.status
        if error is None and self._reported_error is not None:
            error = self._reported_error.decode("latin-1")[:200]
        try:
            route = self._route(scope, status)
        except Exception:  # the model's response is on its way; the monitor never breaks it
            logger.exception("inferwatch failed to label a request")
            return
        rate = self._rate
        if error is not None or status >= 500 or rate >= 1.0 or (rate > 0.0 and _random() < rate):
            most, request_size, response_size = (
                self._max_body,
                self._request_size,
                self._response_size,
            )
            self._put(
                (
                    # When it started, on the wall clock: read only for what is captured.
                    time.time() - latency,
                    self._request_id.decode("ascii", "replace"),
                    scope["method"],
                    scope["path"],
                    route,
                    status,
                    latency,
                    self._first_byte,
                    tuple(self._request_chunks) if request_size <= most else (),
                    request_size,
                    request_size > most,
                    _text(self._request_type),
                    tuple(self._response_chunks) if response_size <= most else (),
                    response_size,
                    response_size > most,
                    _text(self._response_type),
                    error,
                )
            )
        else:
            self._put((scope["method"], route, status, latency, self._first_byte))


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
