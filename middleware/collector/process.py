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
from typing import Any

import uvicorn

from ..settings import Settings
from .api import collector_api
from .election import Claim, claim_store
from .ingest import IngestServer
from .paths import CollectorPaths
from .pod import PodEngine
from .standby import start_standby, stop_standby

__all__ = ["run_collector"]

logger = logging.getLogger("inferwatch")


def run_collector(
    settings: Settings,
    *,
    admin_host: str = "0.0.0.0",
    admin_port: int | None = None,
    auto: bool = False,
    claim: Claim | None = None,
    started: float | None = None,
) -> int:
    """Run the collector of ``settings.db`` until it is told to stop; the exit status.

    ``claim``: the lock and sockets already taken (see :func:`claim_store`), else taken here;
    ``started``: when the process started (``time.monotonic()``), for the log's start times.
    """
    started = time.monotonic() if started is None else started
    paths = CollectorPaths.for_db(settings.db)
    if claim is None:
        claim = claim_store(paths)
    if claim is None:
        logger.warning("inferwatch: a collector already runs for %s", paths.db)
        return 0 if auto else 1
    listening = claim.at
    try:
        engine = PodEngine(settings)
        engine.start()
        ingest = IngestServer(engine, claim.ingest)
        ingest.start()
        try:
            asyncio.run(
                _serve(engine, ingest, claim.api, admin_host, admin_port, auto, paths, started,
                       listening)
            )  # fmt: skip
        finally:
            ingest.stop()
            engine.stop()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(paths.api)
        logger.info("inferwatch: the collector for %s has stopped", paths.db)
        return 0
    finally:
        if auto:
            stop_standby()  # before the lock it waits on is let go
        claim.release()


async def _serve(
    engine: PodEngine,
    ingest: IngestServer,
    api_socket: socket.socket,
    admin_host: str,
    admin_port: int | None,
    auto: bool,
    paths: CollectorPaths,
    started: float,
    listening: float,
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
    await _until_serving(servers)
    now = time.monotonic()
    logger.info(
        "inferwatch: the collector for %s is ready (pid %d): listening %.3f s and serving "
        "%.3f s after its start",
        paths.db, os.getpid(), listening - started, now - started,
    )  # fmt: skip
    if auto:
        start_standby(engine.settings, paths)
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


async def _until_serving(servers: list[tuple[uvicorn.Server, Any]]) -> None:
    """Wait (at most 5 s) until every server has started, so that "ready" in the log is true."""
    deadline = time.monotonic() + 5.0
    while not all(server.started for server, _ in servers) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
