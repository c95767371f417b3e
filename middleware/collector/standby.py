"""A standby collector: started by a running one, with the engine's modules already imported,
waiting on the store's lock to take over the moment the running one dies.

A new collector spends most of its start importing (DuckDB, numpy, starlette); on two busy
cores that took seconds. The standby has done it before it is needed, so after ``kill -9`` of
the collector only the store's open and the API's start remain. It holds ``<db>.standby.lock``
while it waits, so there is one at most, and workers do not start a collector of their own
meanwhile. A collector that stops on purpose stops its standby first.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import threading
import time

from .._settings import Settings
from .election import _start, claim_store, hold_lock
from .paths import CollectorPaths

__all__ = ["stand_by", "start_standby", "stop_standby"]

logger = logging.getLogger("inferwatch")


def start_standby(settings: Settings, paths: CollectorPaths) -> None:
    """Start a standby for this store unless one waits already."""
    free = hold_lock(paths.standby_lock)
    if free is None:
        return
    os.close(free)
    try:
        process = _start(settings, paths, "--standby")
    except OSError as exc:
        logger.warning("inferwatch: no standby collector: %s", exc)
        return
    threading.Thread(target=process.wait, name="inferwatch-standby-reaper", daemon=True).start()


def stop_standby(paths: CollectorPaths, timeout: float = 5.0) -> None:
    """Stop the standby (before the lock it waits on is let go): this collector ends on purpose."""
    fd = hold_lock(paths.standby_lock)
    if fd is not None:
        os.close(fd)
        return
    try:
        with open(paths.standby_lock + ".pid", encoding="ascii") as handle:
            pid = int(handle.read().strip() or 0)
        if pid:
            os.kill(pid, signal.SIGTERM)
    except (OSError, ValueError) as exc:
        logger.warning("inferwatch: could not stop the standby collector: %s", exc)
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        fd = hold_lock(paths.standby_lock)
        if fd is not None:
            os.close(fd)
            return
        time.sleep(0.01)


def stand_by(settings: Settings, started: float) -> int:
    """Wait for the store's lock, the engine imported; then run as its collector."""
    paths = CollectorPaths.for_db(settings.db)
    standby = hold_lock(paths.standby_lock)
    if standby is None:
        return 0  # one waits already
    try:
        with open(paths.standby_lock + ".pid", "w", encoding="ascii") as handle:
            handle.write(str(os.getpid()))
        from . import api, pod, process  # noqa: F401  (imported now, not when needed)

        lock = os.open(paths.lock, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o660)
        fcntl.flock(lock, fcntl.LOCK_EX)  # SIGTERM (the default action) ends the wait
    finally:
        with contextlib.suppress(OSError):
            os.unlink(paths.standby_lock + ".pid")
        os.close(standby)  # the next standby may start
    taken = time.monotonic()
    claim = claim_store(paths, lock)
    assert claim is not None
    logger.info("inferwatch: the standby collector takes over (pid %d)", os.getpid())
    return process.run_collector(settings, auto=True, claim=claim, started=taken)
