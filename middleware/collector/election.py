"""Which process runs the collector of a log store: a lock it holds, and the spawn of a new one.

The collector holds an exclusive ``flock`` on ``<db>.collector.lock`` for its whole life, so a
free lock means no collector runs. A worker that finds none takes ``<db>.spawn.lock`` (so that
one worker of many spawns), starts the collector as a process of its own session, and waits
until the collector holds its lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time

from ..errors import MonitorError
from ..settings import Settings
from .paths import CollectorPaths

__all__ = [
    "SETTINGS_ENV",
    "Claim",
    "claim_store",
    "collector_running",
    "hold_lock",
    "spawn_collector",
]

logger = logging.getLogger("inferwatch")

SETTINGS_ENV = "INFERWATCH_COLLECTOR_SETTINGS"
"""The environment variable that hands a worker's settings to the collector it starts."""

_START_WAIT_S = 15.0


def hold_lock(path: str) -> int | None:
    """An open descriptor holding the exclusive lock on ``path``, or None when another holds it."""
    # Read-only is enough for flock, so a group that may read the file may take the lock.
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o660)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """What a collector holds from its first moments: the store's lock and both sockets."""

    lock: int
    api: socket.socket
    ingest: socket.socket
    at: float = dataclasses.field(default_factory=time.monotonic)  # when it was taken

    def release(self) -> None:
        """Close the sockets (their files stay until removed) and let go of the lock."""
        self.api.close()
        self.ingest.close()
        os.close(self.lock)


def claim_store(paths: CollectorPaths, lock: int | None = None) -> Claim | None:
    """Take the collector lock and listen on both sockets; None when a collector runs already.

    Done before the engine is even imported, so that a worker that lost its collector connects
    again at once: the kernel queues its connection and frames while the engine starts. The API
    socket listens before the ingest socket, so a connected worker never forwards into a gap.
    ``lock``: the collector lock, when the caller holds it already (a standby taking over).
    """
    if lock is None:
        lock = hold_lock(paths.lock)
    if lock is None:
        return None
    try:
        api = _unix_listener(paths.api)
        try:
            ingest = _unix_listener(paths.ingest)
        except BaseException:
            api.close()
            raise
    except BaseException:
        os.close(lock)
        raise
    return Claim(lock, api, ingest)


def _unix_listener(path: str) -> socket.socket:
    """A socket listening on ``path``, replacing a stale file (the caller holds the lock)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o660)  # the app's containers share a group (fsGroup), not a user
        sock.listen(512)
    except BaseException:
        sock.close()
        raise
    return sock


def collector_running(paths: CollectorPaths) -> bool:
    """Whether a collector holds the lock of this store now."""
    fd = hold_lock(paths.lock)
    if fd is None:
        return True
    os.close(fd)  # closing the descriptor releases the lock just taken
    return False


def spawn_collector(settings: Settings, paths: CollectorPaths, output: int | None = None) -> bool:
    """Start a collector for this store unless one runs or another worker is starting one.

    The collector gets the worker's whole ``settings``: it runs the engine, which reads them all.
    It logs to ``output`` (a file descriptor) where given, else to its log file beside the store.

    Returns True when this call started one; raises :class:`MonitorError` saying why when the
    one it started did not come up. Blocks (in the worker's sender thread, never on the
    request path) until the new collector holds its lock, at most 15 s.
    """
    spawn = hold_lock(paths.spawn_lock)
    if spawn is None:
        return False  # another worker is starting it
    try:
        if collector_running(paths) or _standby_waiting(paths):
            return False  # a standby takes the lock the moment it is free
        process = _start(settings, paths, output=output)
        # Reap it when it exits while this worker lives, so that it leaves no zombie.
        threading.Thread(
            target=process.wait, name="inferwatch-collector-reaper", daemon=True
        ).start()
        deadline = time.monotonic() + _START_WAIT_S
        while not collector_running(paths):
            if process.poll() is not None:
                said = _last_line(paths.log) if output is None else "its log is above"
                raise MonitorError(f"the collector exited at start: {said}")
            if time.monotonic() > deadline:
                where = paths.log if output is None else "above"
                raise MonitorError(f"the collector did not start in 15 s; its log is {where}")
            time.sleep(0.01)
        return True
    finally:
        os.close(spawn)


def _last_line(log: str) -> str:
    """The last line of the collector's log: why it stopped, as it said it."""
    try:
        with open(log, "rb") as handle:
            handle.seek(max(0, os.fstat(handle.fileno()).st_size - 4096))
            lines = handle.read().decode("utf-8", "replace").strip().splitlines()
    except OSError:
        lines = []
    return lines[-1].strip() if lines else f"no reason in {log}"


def _standby_waiting(paths: CollectorPaths) -> bool:
    fd = hold_lock(paths.standby_lock)
    if fd is None:
        return True
    os.close(fd)
    return False


def _start(
    settings: Settings, paths: CollectorPaths, mode: str = "--auto", output: int | None = None
) -> subprocess.Popen[bytes]:
    values = {
        spec.name: list(value) if isinstance(value, tuple) else value
        for spec in dataclasses.fields(settings)
        if (value := getattr(settings, spec.name)) is not None
    }
    values["db"] = paths.db
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.environ.get("PYTHONPATH")
    env = {
        **os.environ,
        SETTINGS_ENV: json.dumps(values),
        "PYTHONPATH": package_root + (os.pathsep + path if path else ""),
    }
    with open(paths.log, "ab") if output is None else contextlib.nullcontext() as log:
        if mode == "--auto":
            logger.info("inferwatch: starting the collector for %s", paths.db)
        return subprocess.Popen(
            [sys.executable, "-m", __package__, mode],
            stdin=subprocess.DEVNULL,
            stdout=log if output is None else output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
