"""Run the sidecar: the proxy and the monitor API as two uvicorn servers in one event loop.

The engine runs in a collector process that the proxy starts beside itself and hands its
captures to, as a worker does (``sidecar_collector``); the monitor API is the collector's, with
the upstream's figures added here. With ``sidecar_collector`` off (or ``db=":memory:"``) the
engine runs in this process instead.

Start: check settings, bind both ports (a taken port is one clear line), start the engine or the
collector once, serve. SIGTERM or SIGINT: /readyz turns 503, the proxy stops accepting and lets
in-flight requests finish for up to ``drain_timeout``, the admin server stops, then everything
captured is written (by the collector, which then exits) and the process exits 0. A second
signal cuts the drain short. Both servers speak HTTP/1.1 through :class:`TimedHttpProtocol`,
which bounds how long and how much a client may send.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import errno
import gc
import logging
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.config import LOGGING_CONFIG

from inferwatch.middleware import Engine, MonitorError, MonitorMiddleware, Settings
from inferwatch.middleware.api.access import is_loopback
from inferwatch.middleware.api.app import build_api
from inferwatch.middleware.collector import ApiForwarder
from inferwatch.middleware.collector.election import collector_running

from ._admin import AdminApp, UpstreamFigures, UpstreamProbe
from ._client import TimedHttpProtocol
from ._collector_admin import CollectorAdmin
from ._connection import UpstreamError
from ._direct import DirectPath
from ._proxy import Proxy, RequestIds, UpstreamStats
from ._upstream import Upstream, UpstreamPool

__all__ = ["serve"]

logger = logging.getLogger("inferwatch")

_COLLECTOR_LINGER_S = 0.5  # with sidecar_collector: the collector's wait for a proxy to return
_COLLECTOR_EXIT_S = 5.0  # and its time to write what it holds and let the store go
_CLIENT_KEEPALIVE = 75.0  # above the idle timeouts of the load balancers that usually front us


class _QuietUpstreamErrors(logging.Filter):
    """Drop uvicorn's traceback for a response cut by the upstream: the proxy logged it already."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, UpstreamError)


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signals to :func:`serve`, which runs two of them, and ends
    the direct path's requests where the drain ends the ASGI ones."""

    def __init__(self, config: uvicorn.Config, direct: DirectPath | None = None) -> None:
        super().__init__(config)
        self.direct = direct

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        if self.direct is not None:
            self.direct.cut()


def serve(settings: Settings) -> int:
    """Run the sidecar until SIGTERM or SIGINT; return the exit status.

    Raises :class:`MonitorError` with one line when a setting is wrong or a port is taken.
    """
    if not settings.upstream:
        raise MonitorError(
            "Missing setting upstream: pass --upstream URL or set INFERWATCH_UPSTREAM."
        )
    try:
        upstream = Upstream.parse(settings.upstream)
    except ValueError as exc:
        raise MonitorError(f"Bad value for setting upstream: {exc}.") from exc
    health_path = settings.upstream_health_path
    if health_path is not None and not health_path.startswith("/"):
        raise MonitorError("Bad value for setting upstream_health_path: it must start with '/'.")
    proxy_socket = _bind(settings.host, settings.port, "port")
    try:
        admin_socket = _bind(settings.admin_host, settings.admin_port, "admin_port")
    except MonitorError:
        proxy_socket.close()
        raise
    return _run_loop(_main(settings, upstream, proxy_socket, admin_socket))


def _run_loop(main: Coroutine[Any, Any, int]) -> int:
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop on Linux
        pass
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)


def _bind(host: str, port: int, setting: str) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise MonitorError(f"Bad value for setting {setting}: cannot use {host}: {exc}.") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise MonitorError(
                f"Port {port} is in use: another process listens on {host}:{port} "
                f"(setting {setting})."
            ) from exc
        raise MonitorError(
            f"Cannot listen on {host}:{port} (setting {setting}): {exc.strerror or exc}."
        ) from exc
    sock.setblocking(False)
    return sock


def _log_config() -> dict[str, Any]:
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["inferwatch"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _config(
    app: Any,
    *,
    proxy: bool,
    drain: float,
    settings: Settings,
    direct: DirectPath | None = None,
) -> uvicorn.Config:
    protocol = type(
        "TimedHttpProtocol",
        (TimedHttpProtocol,),
        {"timeout": settings.client_timeout, "max_head": settings.max_head_bytes, "direct": direct},
    )
    return uvicorn.Config(
        app,
        http=protocol,
        ws="none",
        lifespan="off",
        interface="asgi3",
        access_log=False,
        proxy_headers=False,  # X-Forwarded-For is extended, never trusted to rewrite the client
        server_header=not proxy,  # the upstream's Server and Date headers pass through
        date_header=not proxy,
        timeout_keep_alive=int(_CLIENT_KEEPALIVE) if proxy else 5,
        timeout_graceful_shutdown=max(round(drain), 1) if proxy else 1,
        log_config=_log_config(),
    )


def _settle_gc() -> None:
    """Keep the garbage collector off what start-up built, and run its youngest pass less often.

    Each request allocates a few dozen short-lived containers, and the writer's parsed bodies
    many more: at Python's default threshold (700) the collector ran over 100 times a second
    under load, and each full pass walked the ~70,000 objects of the imported modules. Frozen,
    those are never walked again; at 10,000 the young passes were about a sixth as many.
    Together about 8 µs of CPU per proxied request at sample_rate 1.0 (docs/benchmarks.md).
    This is the sidecar's own process; the middleware leaves the model app's collector alone.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 20, 20)


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def _main(
    settings: Settings,
    upstream: Upstream,
    proxy_socket: socket.socket,
    admin_socket: socket.socket,
) -> int:
    loop = asyncio.get_running_loop()
    pool = UpstreamPool(
        upstream,
        limit=settings.upstream_max_connections,
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_timeout,
        keepalive=settings.upstream_keepalive,
    )
    stats = UpstreamStats()
    probe = UpstreamProbe(upstream, settings.upstream_health_path)
    figures = UpstreamFigures(probe, pool, stats)
    proxy_app = Proxy(pool, stats)
    engine: Engine | None = None
    external = False  # a collector this proxy found running, not one it starts
    admin_app: ASGIApp
    if settings.sidecar_collector and settings.db != ":memory:":
        # The collector is this pod's and goes with the proxy: it lingers a moment, not the
        # seconds that let a server replace its workers.
        collector_settings = dataclasses.replace(
            settings, collector_linger=_COLLECTOR_LINGER_S, collector_autostart=True
        )
        monitor = MonitorMiddleware(
            proxy_app,
            settings=collector_settings,
            serve_api=False,
            collector_output=sys.stderr.fileno(),  # its log is the sidecar's
        )
        if monitor.off is not None:
            raise MonitorError(monitor.off.reason)
        channel = monitor.channel
        assert channel is not None
        # One already running (an `inferwatch collector` container) stays when the proxy goes.
        external = collector_running(channel.paths)
        forward = ApiForwarder(channel.paths.api, lambda: channel.problem)
        admin_app = CollectorAdmin(forward, probe, figures)
    else:
        engine = Engine(settings)
        engine.register(figures)
        monitor = MonitorMiddleware(proxy_app, engine=engine, serve_api=False)
        admin_app = AdminApp(build_api(engine), probe)
    direct = DirectPath(monitor, proxy_app)
    proxy = _Server(
        _config(
            RequestIds(monitor),
            proxy=True,
            drain=settings.drain_timeout,
            settings=settings,
            direct=direct,
        ),
        direct,
    )
    admin = _Server(_config(admin_app, proxy=False, drain=1.0, settings=settings))
    logging.getLogger("uvicorn.error").addFilter(_QuietUpstreamErrors())

    def on_signal(signum: int) -> None:
        if proxy.should_exit:
            logger.warning("second %s: cutting the drain short", signal.Signals(signum).name)
            proxy.force_exit = True
            return
        logger.info(
            "%s: draining in-flight requests (up to %g s), then flushing the store",
            signal.Signals(signum).name,
            settings.drain_timeout,
        )
        figures.draining = True
        proxy.should_exit = True

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    if settings.admin_token is None and not is_loopback(settings.admin_host):
        logger.warning(
            "inferwatch: no admin_token is set, so the monitor API answers the dashboard, /drift, "
            "/alerts, exports, labels and checks only over loopback (403 from beyond it; probes, "
            "/health and /metrics stay open): set admin_token to reach them from the network"
        )
    if engine is not None:
        engine.start()
    elif not await monitor.start():
        raise MonitorError(monitor.off.reason if monitor.off else "the monitor did not start")
    _settle_gc()
    try:
        logger.info(
            "inferwatch sidecar: proxy on %s -> %s; monitor API on %s",
            _address(proxy_socket),
            upstream.url,
            _address(admin_socket),
        )
        if external:
            logger.info(
                "a collector already runs for %s: the proxy hands over to it and leaves it "
                "running when it stops",
                settings.db,
            )
        if probe.path is None:
            await probe.check()  # find the route now; the probe says which it found
        if settings.upstream_health_path is not None or (probe.url is None and not probe.tcp):
            logger.info("upstream readiness: %s", probe.describe())
        proxy_task = loop.create_task(proxy.serve(sockets=[proxy_socket]))
        admin_task = loop.create_task(admin.serve(sockets=[admin_socket]))
        await asyncio.wait({proxy_task, admin_task}, return_when=asyncio.FIRST_COMPLETED)
        figures.draining = True
        proxy.should_exit = True
        await proxy_task
        admin.should_exit = True
        await admin_task
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await pool.close()
        await probe.close()
        if engine is not None:
            engine.stop()
        else:
            await loop.run_in_executor(None, monitor.stop)
            if not external:
                # Exit once the collector has let the store go, so that what follows may open it.
                await _collector_gone(monitor)
    return 0


async def _collector_gone(monitor: MonitorMiddleware) -> None:
    """Wait (a few seconds at most) until the collector this proxy fed has exited."""
    assert monitor.channel is not None
    paths = monitor.channel.paths
    deadline = time.monotonic() + _COLLECTOR_LINGER_S + _COLLECTOR_EXIT_S
    while collector_running(paths) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
