"""MonitorMiddleware: the pure-ASGI middleware that times, samples and captures inferences.

The request path only measures, copies chunk references and appends one object to a bounded
queue. Parsing, DuckDB and everything slow happen in the engine's threads.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._engine import Engine
from ._errors import MonitorError
from ._monitor_off import MonitoringOff, fallback_prefix
from ._request_ids import new_request_id
from ._settings import Settings

__all__ = ["MonitorMiddleware"]

logger = logging.getLogger("inferwatch")

_REQUEST_ID = b"x-request-id"
_CONTENT_TYPE = b"content-type"
_ERROR = b"x-inferwatch-error"
_MAX_REQUEST_ID = 128
_UNMATCHED = "<unmatched>"
_OTHER = "<other>"


class MonitorMiddleware:
    """Monitor an ASGI model app: capture payloads, time requests, serve the monitor API.

    ``MonitorMiddleware(app, db="monitor.duckdb", baseline="baseline.json", sample_rate=0.2)``
    takes every setting of :class:`Settings` as a keyword. The engine starts and stops with
    the app's lifespan; the monitor API answers under ``api_prefix``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings | None = None,
        engine: Engine | None = None,
        serve_api: bool = True,
        **values: Any,
    ) -> None:
        self.app = app
        # Set when monitoring cannot run: the model's traffic then passes through untouched.
        # Starlette builds its middleware on the first ASGI call, so raising here would make
        # uvicorn take the lifespan protocol for unsupported and answer every request with a
        # 500: a bad setting is reported through lifespan.startup.failed, /readyz and the log.
        self.off: MonitoringOff | None = None
        if settings is not None and values:
            raise TypeError("Pass either settings or keyword settings, not both.")
        try:
            if settings is None:
                settings = engine.settings if engine is not None else Settings.load(values)
            engine = engine if engine is not None else Engine(settings)
        except MonitorError as exc:
            self.off = MonitoringOff(app, fallback_prefix(values), str(exc))
            return
        self.settings = settings
        self.engine = engine
        self._sample_rate = settings.sample_rate
        self._max_body = settings.max_body_bytes
        self._max_routes = settings.max_routes
        self._routes: set[str] = set()
        self._prefix = settings.api_prefix
        self._api: ASGIApp | None = None
        if serve_api:
            from ._api import build_api

            self._api = build_api(self.engine)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.off is not None:
            await self.off(scope, receive, send)
            return
        scope_type = scope["type"]
        if scope_type == "http":
            if self._api is not None:
                root: str = scope.get("root_path", "")
                path: str = scope["path"]
                if root and path.startswith(root):
                    path = path[len(root) :]
                prefix = self._prefix
                if path.startswith(prefix) and (
                    len(path) == len(prefix) or path[len(prefix)] == "/"
                ):
                    # Served without lifespan events, the first request starts the engine.
                    if not self.engine.running and not self._start():
                        await self.off(scope, receive, send)  # type: ignore[misc]
                        return
                    await self._api({**scope, "root_path": root + prefix}, receive, send)
                    return
            if not self.engine.running and not self._start():
                await self.off(scope, receive, send)  # type: ignore[misc]
                return
            await self._monitor(scope, receive, send)
        elif scope_type == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _start(self, *, logged: bool = False) -> bool:
        """Start the engine; when it cannot start, monitoring is off and this is False."""
        try:
            self.engine.start()
        except Exception as exc:  # the model's traffic must flow whatever the monitor's state
            reason = f"the monitoring engine failed to start: {exc}"
            self.off = MonitoringOff(self.app, self._prefix, reason, logged=logged)
            if logged:
                logger.error("inferwatch is off, requests pass through: %s", reason)
            return False
        return True

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine = self.engine

        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._start(logged=True)  # start-up goes on: the model serves unmonitored
            return message

        async def lifespan_send(message: Message) -> None:
            if message["type"] in {"lifespan.shutdown.complete", "lifespan.shutdown.failed"}:
                # Written before the server is told it may exit, so nothing sampled is lost.
                engine.stop()
            await send(message)

        await self.app(scope, lifespan_receive, lifespan_send)

    async def _monitor(self, scope: Scope, receive: Receive, send: Send) -> None:
        engine = self.engine
        tracker = engine.efficiency
        tracker.in_flight += 1
        started = time.perf_counter()
        wall = time.time()
        max_body = self._max_body
        request_id = b""
        request_type: bytes | None = None
        for key, value in scope["headers"]:
            if key == _REQUEST_ID:
                request_id = value
            elif key == _CONTENT_TYPE:
                request_type = value
        if not request_id or len(request_id) > _MAX_REQUEST_ID or not request_id.isascii():
            request_id = new_request_id()
        request_id_header = (_REQUEST_ID, request_id)

        request_chunks: list[bytes] = []
        request_size = 0
        request_truncated = False
        response_chunks: list[bytes] = []
        response_size = 0
        response_truncated = False
        response_type: bytes | None = None
        status = 0
        first_byte: float | None = None
        reported_error: bytes | None = None  # the sidecar's reason for a 502 or 504

        async def capture_receive() -> Message:
            nonlocal request_size, request_truncated
            message = await receive()
            body = message.get("body")
            if body:
                request_size += len(body)
                if request_size <= max_body:
                    request_chunks.append(body)
                else:
                    request_truncated = True
            return message

        async def capture_send(message: Message) -> None:
            nonlocal status, response_type, response_size, response_truncated, first_byte
            nonlocal reported_error
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = []
                for item in message.get("headers", ()):
                    key = item[0].lower()
                    if key == _REQUEST_ID:
                        continue
                    if key == _CONTENT_TYPE:
                        response_type = item[1]
                    elif key == _ERROR:
                        reported_error = item[1]
                    headers.append(item)
                headers.append(request_id_header)
                message["headers"] = headers
            elif message["type"] == "http.response.body":
                body = message.get("body")
                if body:
                    if first_byte is None:
                        first_byte = time.perf_counter() - started
                    response_size += len(body)
                    if response_size <= max_body:
                        response_chunks.append(body)
                    else:
                        response_truncated = True
            await send(message)

        error: str | None = None
        try:
            await self.app(scope, capture_receive, capture_send)
        except BaseException as exc:
            error = type(exc).__name__
            if status == 0:
                status = 500
            raise
        finally:
            latency = time.perf_counter() - started
            tracker.in_flight -= 1
            if error is None and reported_error is not None:
                error = reported_error.decode("latin-1")[:200]
            route = self._route_label(scope, status)
            tracker.observe(scope["method"], route, status, latency, first_byte)
            if error is not None or status >= 500 or random.random() < self._sample_rate:
                try:
                    # A plain tuple in Capture's field order: see CaptureQueue.put.
                    engine.queue.put(
                        (
                            wall,
                            request_id.decode("ascii", "replace"),
                            scope["method"],
                            scope["path"],
                            route,
                            status,
                            latency,
                            first_byte,
                            tuple(request_chunks),
                            request_size,
                            request_truncated,
                            _text(request_type),
                            tuple(response_chunks),
                            response_size,
                            response_truncated,
                            _text(response_type),
                            error,
                        )
                    )
                except Exception:  # the model's response is already on its way
                    logger.exception("inferwatch failed to queue a capture")

    def _route_label(self, scope: Scope, status: int) -> str:
        """The route template, so that labels stay few however many paths clients send."""
        route = scope.get("route")
        template = getattr(route, "path", None)
        if isinstance(template, str):
            mount = scope.get("root_path", "")[len(scope.get("app_root_path", "")) :]
            label = mount + template if mount and not template.startswith(mount) else template
        elif status == 404:
            return _UNMATCHED
        else:
            label = scope["path"]
        if label in self._routes:
            return label
        if len(self._routes) >= self._max_routes:
            return _OTHER
        self._routes.add(label)
        return label


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")
