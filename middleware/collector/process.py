"""The collector process: one per pod, the only one that opens the log store.

It runs the engine (parsing, writing, checks, labels, evaluation, alerts, resource sampling),
reads the workers' frames from ``<db>.sock``, and serves the monitor API on ``<db>.api.sock``
(where the workers forward it) and on ``--admin-port`` when given. SIGTERM or SIGINT: it stops
taking requests, writes everything received, and exits. Started by a worker (``auto``), it also
exits once no worker has been connected for ``collector_linger``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time

import uvicorn

from .._settings import Settings
from .api import collector_api
from .election import hold_lock
from .ingest import IngestServer
from .paths import CollectorPaths
from .pod import PodEngine

__all__ = ["run_collector"]

logger = logging.getLogger("inferwatch")


def run_collector(
    settings: Settings,
    *,
    admin_host: str = "0.0.0.0",
    admin_port: int | None = None,
    auto: bool = False,
) -> int:
    """Run the collector of ``settings.db`` until it is told to stop; the exit status."""
    paths = CollectorPaths.for_db(settings.db)
    lock = hold_lock(paths.lock)
    if lock is None:
        logger.warning("inferwatch: a collector already runs for %s", paths.db)
        return 0 if auto else 1
    try:
        engine = PodEngine(settings)
        engine.start()
        # The API listens before workers can connect: a connected worker forwards to it at once.
        api_socket = _unix_listener(paths.api)
        ingest = IngestServer(engine, paths.ingest)
        ingest.start()
        try:
            asyncio.run(_serve(engine, ingest, api_socket, admin_host, admin_port, auto, paths))
        finally:
            ingest.stop()
            engine.stop()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(paths.api)
        logger.info("inferwatch: the collector for %s has stopped", paths.db)
        return 0
    finally:
        os.close(lock)


async def _serve(
    engine: PodEngine,
    ingest: IngestServer,
    api_socket: socket.socket,
    admin_host: str,
    admin_port: int | None,
    auto: bool,
    paths: CollectorPaths,
) -> None:
    quiet = {"lifespan": "off", "log_level": "warning", "access_log": False}
    api_server = uvicorn.Server(
        uvicorn.Config(collector_api(engine, ingest, trusted=True), **quiet)  # type: ignore[arg-type]
    )
    servers = [(api_server, [api_socket])]
    if admin_port is not None:
        admin = uvicorn.Config(
            collector_api(engine, ingest, trusted=False),
            host=admin_host,
            port=admin_port,
            **quiet,  # type: ignore[arg-type]
        )
        servers.append((uvicorn.Server(admin), None))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # Server._serve, not serve(): serve() would raise the signal again once it returns, ending
    # this process before the engine has written what it holds.
    tasks = [asyncio.create_task(server._serve(sockets)) for server, sockets in servers]
    linger = engine.settings.collector_linger
    logger.info("inferwatch: the collector for %s is ready (pid %d)", paths.db, os.getpid())
    while not stop.is_set() and not any(task.done() for task in tasks):
        idle = time.monotonic() - engine.last_worker_seen
        if auto and ingest.connected() == 0 and idle > linger:
            logger.info("inferwatch: no worker for %.0f s; the collector exits", linger)
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)
    for server, _ in servers:
        server.should_exit = True
    await asyncio.gather(*tasks, return_exceptions=True)


def _unix_listener(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    os.chmod(path, 0o660)
    sock.listen(512)
    return sock
