"""MonitorMiddleware: the pure-ASGI middleware that times, samples and captures inferences.

The request path only measures, keeps references to body chunks and appends one tuple to a list.
By default a sender thread hands those to the pod's collector process, which owns the store and
does everything slow (``inferwatch.middleware.collector``); with ``engine=`` (tests, a sidecar
with ``sidecar_collector`` off) the engine runs in this process instead.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from typing import TYPE_CHECKING, Any, Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..baseline.model_scope import baseline_files
from ..collector import ApiForwarder, CollectorChannel
from ..collector.election import spawn_collector
from ..collector.options import ChannelOptions
from ..errors import MonitorError
from ..settings import Settings
from .exchange import Exchange
from .monitor_off import MonitoringOff, api_path, fallback_prefix
from .request_ids import new_request_id

if TYPE_CHECKING:
    from ..engine.engine import Engine

__all__ = ["MonitorMiddleware"]

logger = logging.getLogger("inferwatch")

_REQUEST_ID = b"x-request-id"
_CONTENT_TYPE = b"content-type"
_MAX_REQUEST_ID = 128
_UNMATCHED = "<unmatched>"
_OTHER = "<other>"
_CONNECT_WAIT_S = 15.0
_PROBES = frozenset({"/healthz", "/readyz"})  # answered at once, whatever the collector's state


class MonitorMiddleware:
    """Monitor an ASGI model app: capture payloads, time requests, serve the monitor API.

    ``MonitorMiddleware(app, db="monitor.duckdb", baseline="baseline.json", sample_rate=0.2)``
    takes every setting of :class:`Settings` as a keyword. Each worker process hands its requests
    to the one collector of ``db`` (started by the first worker that finds none) and answers the
    monitor API under ``api_prefix`` through it, so every worker gives the same figures. Pass
    ``engine=Engine(settings)`` to run the engine in this process instead (as the sidecar does
    with ``sidecar_collector`` off);
    ``db=":memory:"`` always does. The hand-off starts and stops with the app's lifespan.
    A collector this process starts logs to its file beside the store, or to the file descriptor
    ``collector_output``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings | None = None,
        engine: Engine | None = None,
        serve_api: bool = True,
        collector_output: int | None = None,
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
            if engine is None and settings.db == ":memory:":
                # Imported only here: a worker that hands over never loads the engine (DuckDB,
                # NumPy and their objects, which every full garbage collection would walk).
                from ..engine.engine import Engine

                engine = Engine(settings)
            elif engine is None:
                _readable_baselines(settings)  # the collector would refuse them: say so here
        except MonitorError as exc:
            self.off = MonitoringOff(app, fallback_prefix(values), str(exc))
            return
        self.settings = settings
        self.engine: Engine | None = None
        self.channel: CollectorChannel | None = None
        self._forward: ApiForwarder | None = None
        if engine is None and settings.db != ":memory:":
            start = functools.partial(spawn_collector, settings, output=collector_output)
            self.channel = CollectorChannel(
                ChannelOptions.from_settings(settings),
                start=start if settings.collector_autostart else None,
            )
            self._sink: _Sink = self.channel
        else:
            self.engine = engine
            self._sink = _InProcess(engine)
        self._sample_rate = settings.sample_rate
        self._max_body = settings.max_body_bytes
        self._label = self._route_label  # bound once, not per request
        self._max_routes = settings.max_routes
        self._routes: set[str] = set()
        self._prefix = settings.api_prefix
        self._api: ASGIApp | None = None
        if serve_api:
            if self.engine is not None:
                from ..api.app import build_api

                self._api = build_api(self.engine)
            else:
                channel: Any = self.channel
                self._forward = ApiForwarder(channel.paths.api, lambda: channel.problem)
        # Set when the API is served: a path that does not hold it is no API request.
        self._serving = self._prefix if serve_api else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The model's requests take the first branch, in this one coroutine: each coroutine
        # between the server and the app is resumed again at every await of a sync route's
        # thread hand-off (seven times per request in FastAPI); a helper coroutine here cost 51
        # of the 204 bytecodes that the two ran per request.
        if (
            scope["type"] == "http"
            and self.off is None
            and self._sink.running
            and (
                self._serving is None
                or self._serving not in scope["path"]
                or api_path(scope, self._prefix) is None
            )
        ):
            sink = self._sink
            sink.in_flight += 1
            request_id = b""
            request_type: bytes | None = None
            for key, value in scope["headers"]:
                if key == _REQUEST_ID:
                    request_id = value
                elif key == _CONTENT_TYPE:
                    request_type = value
            if not request_id or len(request_id) > _MAX_REQUEST_ID or not request_id.isascii():
                request_id = new_request_id()
            exchange = Exchange(
                scope,
                receive,
                send,
                request_id,
                request_type,
                sink.put,
                self._label,
                self._sample_rate,
                self._max_body,
            )
            try:
                await self.app(scope, exchange.receive, exchange.send)
            except BaseException as exc:
                if not exchange.recorded:
                    if exchange.status == 0:
                        exchange.status = 500
                    exchange.record(type(exc).__name__)
                raise
            finally:
                sink.in_flight -= 1
                if not exchange.recorded:
                    exchange.record(None)
            return
        await self._other(scope, receive, send)

    async def _other(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Everything but a model request while monitoring runs: the monitor API, the lifespan,
        other scopes, and requests while monitoring is off or not yet started."""
        if self.off is not None:
            await self.off(scope, receive, send)
            return
        scope_type = scope["type"]
        if scope_type == "http":
            path = api_path(scope, self._prefix) if self._serving is not None else None
            if path is not None:
                prefix = self._prefix
                # Served without lifespan events, the first request starts the hand-off.
                if not self._sink.running and not self._start():
                    await self.off(scope, receive, send)  # type: ignore[misc]
                    return
                scope = {**scope, "root_path": scope.get("root_path", "") + prefix}
                if self._forward is not None:
                    below = path[len(prefix) :] or "/"
                    if below not in _PROBES and not self.channel.connected:  # type: ignore[union-attr]
                        # Being started (no lifespan) or restarted: worth a short wait.
                        await self.channel.wait_connected(_CONNECT_WAIT_S)  # type: ignore[union-attr]
                    await self._forward(scope, receive, send, below)
                else:
                    await self._api(scope, receive, send)  # type: ignore[misc]
                return
            if not self._sink.running and not self._start():
                await self.off(scope, receive, send)  # type: ignore[misc]
                return
            if self._sink.running:
                await self(scope, receive, send)  # now a model request, monitored
            else:  # an engine stopped for good (its lifespan shut down): pass it through
                await self.app(scope, receive, send)
        elif scope_type == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _start(self, *, logged: bool = False) -> bool:
        """Start the engine or the hand-off; when it cannot start, monitoring is off and this is
        False."""
        try:
            self._sink.start()
        except Exception as exc:  # the model's traffic must flow whatever the monitor's state
            reason = f"the monitoring engine failed to start: {exc}"
            self.off = MonitoringOff(self.app, self._prefix, reason, logged=logged)
            if logged:
                logger.error("inferwatch is off, requests pass through: %s", reason)
            return False
        return True

    async def start(self) -> bool:
        """Start monitoring now, as the lifespan's start-up does (for a server run without
        lifespan events): the engine or the hand-off, and, where this process starts the
        collector, wait until it answers. False when monitoring is off (said in the log)."""
        if self.off is not None:
            return False
        if not self._start(logged=True):
            return False
        channel = self.channel
        if channel is not None and (
            self.settings.collector_autostart or os.path.exists(channel.paths.ingest)
        ):
            # The first worker starts the collector: the app is ready once it answers.
            await channel.wait_connected(_CONNECT_WAIT_S)
        return True

    def stop(self) -> None:
        """Write everything captured, or have the collector confirm it written (blocks)."""
        if self.off is None:
            self._sink.stop()

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        sink = self._sink

        async def lifespan_receive() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # Start-up goes on when the monitor cannot start: the model serves unmonitored.
                await self.start()
            return message

        async def lifespan_send(message: Message) -> None:
            if message["type"] in {"lifespan.shutdown.complete", "lifespan.shutdown.failed"}:
                # Written (or confirmed written by the collector) before the server is told it
                # may exit, so nothing sampled is lost.
                await asyncio.get_running_loop().run_in_executor(None, sink.stop)
            await send(message)

        await self.app(scope, lifespan_receive, lifespan_send)

    def exchange(
        self, scope: Scope, request_id: bytes, request_type: bytes | None
    ) -> Exchange | None:
        """Monitor one request that a server handles without calling the app (the sidecar's
        direct path); None when monitoring is not running. Pass it to :meth:`done` once."""
        if self.off is not None or not self._sink.running:
            return None
        self._sink.in_flight += 1
        return Exchange(
            scope,
            _not_asgi,
            _not_asgi,
            request_id,
            request_type,
            self._sink.put,
            self._label,
            self._sample_rate,
            self._max_body,
        )

    def done(self, exchange: Exchange, error: str | None = None) -> None:
        """End a request begun with :meth:`exchange`: hand it over unless it already was."""
        self._sink.in_flight -= 1
        if not exchange.recorded:
            exchange.record(error)

    def _route_label(self, scope: Scope, status: int) -> str:
        """The route template, so that labels stay few however many paths clients send."""
        route = scope.get("route")
        template = getattr(route, "path", None)
        if isinstance(template, str):
            label = template
            root = scope.get("root_path")
            if root:
                mount = root[len(scope.get("app_root_path", "")) :]
                if mount and not template.startswith(mount):
                    label = mount + template
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


class _Sink(Protocol):
    """Where the request path puts its one tuple per request."""

    running: bool
    in_flight: int

    def start(self) -> None: ...

    def stop(self) -> Any: ...

    def put(self, record: tuple[Any, ...]) -> Any: ...


class _InProcess:
    """The request path's sink when the engine runs in this process."""

    __slots__ = ("engine", "put")

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        tracker, queue = engine.efficiency, engine.queue

        def put(record: tuple[Any, ...]) -> None:
            if len(record) == 5:
                tracker.observe(*record)
            else:
                tracker.observe(record[2], record[4], record[5], record[6], record[7])
                queue.put(record)

        self.put = put

    @property
    def running(self) -> bool:
        return self.engine.running

    @property
    def in_flight(self) -> int:
        return self.engine.efficiency.in_flight

    @in_flight.setter
    def in_flight(self, value: int) -> None:
        self.engine.efficiency.in_flight = value

    def start(self) -> None:
        self.engine.start()

    def stop(self) -> None:
        self.engine.stop()


async def _not_asgi(*_: Any) -> Any:
    raise RuntimeError("this exchange is not served through ASGI")


def _readable_baselines(settings: Settings) -> None:
    """Raise :class:`MonitorError` when a baseline given in ``settings`` cannot be read."""
    paths = [settings.baseline, *baseline_files(settings.baselines).values()]
    if any(paths):
        from ..baseline.watched import BaselineFile  # NumPy, only where a baseline is set

        for path in paths:
            BaselineFile(path)
