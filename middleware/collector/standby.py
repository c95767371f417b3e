"""A standby collector: started by a running one, with the engine's modules already imported,
waiting on the store's lock to take over the moment the running one dies.

A new collector spends most of its start importing (DuckDB, numpy, starlette); on two busy
cores that took seconds. The standby has done it before it is needed, so after ``kill -9`` of
the collector only the store's open and the API's start remain. It holds ``<db>.standby.lock``
while it waits, so there is one at most, and workers do not start a collector of their own
meanwhile. A collector that stops on purpose stops its standby first.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable

from ..settings import Settings
from .election import _start, claim_store, hold_lock
from .paths import CollectorPaths

__all__ = ["stand_by", "start_standby", "stop_standby"]

# process.run_collector, which imports this module: handed in rather than imported back
RunCollector = Callable[..., int]

logger = logging.getLogger("inferwatch")


_child: subprocess.Popen[bytes] | None = None


def start_standby(settings: Settings, paths: CollectorPaths) -> None:
    """Start a standby for this store unless one waits already."""
    global _child
    free = hold_lock(paths.standby_lock)
    if free is None:
        return
    os.close(free)
    try:
        # It logs where this collector does (its log file, or the sidecar's output).
        _child = _start(settings, paths, "--standby", output=sys.stdout.fileno())
    except OSError as exc:
        logger.warning("inferwatch: no standby collector: %s", exc)


def stop_standby(timeout: float = 5.0) -> None:
    """Stop the standby this collector started (before the lock it waits on is let go): this
    collector ends on purpose. One that another started, in a race, takes over and, with no
    worker to serve, exits after ``collector_linger``."""
    child = _child
    if child is None or child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def stand_by(settings: Settings, started: float, load: Callable[[], RunCollector]) -> int:
    """Wait for the store's lock, the engine imported (``load`` imports it and returns the
    collector's ``run_collector``); then run as its collector."""
    paths = CollectorPaths.for_db(settings.db)
    standby = hold_lock(paths.standby_lock)
    if standby is None:
        return 0  # one waits already
    try:
        run_collector = load()  # the engine's modules imported now, not when needed

        lock = os.open(paths.lock, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o660)
        fcntl.flock(lock, fcntl.LOCK_EX)  # SIGTERM (the default action) ends the wait
    finally:
        os.close(standby)  # the next standby may start
    taken = time.monotonic()
    claim = claim_store(paths, lock)
    assert claim is not None
    logger.info("inferwatch: the standby collector takes over (pid %d)", os.getpid())
    return run_collector(settings, auto=True, claim=claim, started=taken)
