"""The collector's side of the hand-off: a Unix socket server that feeds the engine.

One thread reads every worker's frames (selectors, non-blocking), hands their records to the
engine and answers the control messages: a worker's goodbye is acknowledged once what it sent is
written, and :meth:`IngestServer.barrier` asks every worker for a marker after what it holds, so
that a read of the store sees every response already sent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections import deque
from typing import Any

from . import wire
from .pod import PodEngine, WorkerState

__all__ = ["IngestServer"]

logger = logging.getLogger("inferwatch")

_RECV_BYTES = 1 << 20
_SELECT_EVERY_S = 0.02
# Each confirmation wakes the worker's sender thread, which then competes with the model for the
# GIL: confirming every batch as soon as it was written cost the worker ~15 µs per request.
_CONFIRM_EVERY_S = 0.1


class _Connection:
    __slots__ = (
        "confirmed_at", "markers", "reader", "resent_upto", "send_lock", "sock", "state",
        "unwritten",
    )  # fmt: skip

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = wire.FrameReader()
        self.state: WorkerState | None = None
        self.send_lock = threading.Lock()
        self.markers: set[int] = set()
        # (seq, captures taken in by the engine once that batch was): confirmed when written.
        self.unwritten: deque[tuple[int, int]] = deque()
        self.resent_upto = 0  # batches up to this one may have been written by a collector before
        self.confirmed_at = 0.0

    def send(self, message: tuple[Any, ...]) -> None:
        frame = wire.encode(message)
        # Control frames are a few bytes and the worker reads them at once; a worker too stuck
        # to take them within the socket's timeout is one the barrier stops waiting for.
        with self.send_lock:
            self.sock.sendall(frame)


class IngestServer:
    """Accepts on ``listener`` (a listening Unix socket) and feeds ``engine`` with what the
    workers send."""

    def __init__(self, engine: PodEngine, listener: socket.socket) -> None:
        self.engine = engine
        self.path: str = listener.getsockname()
        self._selector = selectors.DefaultSelector()
        self._connections: dict[int, _Connection] = {}
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._token = 0
        self._listener = listener
        self._thread = threading.Thread(target=self._run, name="inferwatch-ingest", daemon=True)
        self._wake_r, self._wake_w = socket.socketpair()

    def start(self) -> None:
        """Start taking connections: those the kernel queued meanwhile come first."""
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Read what connected workers already sent, then close every connection."""
        self._stopping.set()
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(timeout)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def connected(self) -> int:
        return sum(1 for c in list(self._connections.values()) if c.state is not None)

    def barrier(self, timeout: float = 5.0) -> bool:
        """Wait until every connected worker has sent what it held when this was called.

        True when every worker answered within ``timeout``; then the engine flushes its writer.
        """
        with self._changed:
            self._token += 1
            token = self._token
        waiting = []
        for connection in list(self._connections.values()):
            if connection.state is None:
                continue
            try:
                connection.send((wire.FLUSH, token))
            except OSError:
                continue
            waiting.append(connection)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                open_ = [c for c in waiting if c.sock.fileno() in self._connections]
                if all(token in c.markers for c in open_):
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            for connection in waiting:
                connection.markers.discard(token)
        # The ingest thread put everything before the markers into the queue: write it.
        return self.engine.write_through(max(0.5, deadline - time.monotonic()))

    def _run(self) -> None:
        try:
            while True:
                events = self._selector.select(_SELECT_EVERY_S)
                for key, _ in events:
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(64)
                    else:
                        self._read(key.data)
                self._confirm()
                if self._stopping.is_set():
                    self._drain()
                    return
        except Exception:
            logger.exception("inferwatch: the ingest thread failed")

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except BlockingIOError:
                return
            sock.settimeout(1.0)  # reads happen when the selector says so; see _Connection.send
            connection = _Connection(sock)
            self._connections[sock.fileno()] = connection
            self._selector.register(sock, selectors.EVENT_READ, connection)

    def _read(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(_RECV_BYTES)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(connection)
            return
        try:
            for message in connection.reader.feed(data):
                self._handle(connection, message)
        except Exception:
            logger.exception("inferwatch: a worker sent a frame that could not be read")
            self._close(connection)

    def _handle(self, connection: _Connection, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == wire.BATCH:
            if connection.state is not None:
                records = message[1]
                if message[4] <= connection.resent_upto:
                    records = self.engine.not_yet_stored(records)
                self.engine.ingest(connection.state, records, message[2], message[3])
                connection.unwritten.append((message[4], self.engine.counters.sampled))
        elif kind == wire.HELLO:
            connection.state = self.engine.worker_joined(*message[1:5])
        elif kind == wire.RESENT:
            connection.resent_upto = message[1]
        elif kind == wire.MARKER:
            with self._changed:
                connection.markers.add(message[1])
                self._changed.notify_all()
        elif kind == wire.BYE:
            threading.Thread(
                target=self._goodbye, args=(connection, message[1]), daemon=True
            ).start()

    def _confirm(self) -> None:
        """Tell each worker which of its batches are written, so that it stops keeping them."""
        counters = self.engine.counters
        done = counters.stored + counters.dropped + counters.write_errors
        now = time.monotonic()
        for connection in list(self._connections.values()):
            if now - connection.confirmed_at < _CONFIRM_EVERY_S:
                continue
            unwritten = connection.unwritten
            seq = None
            while unwritten and unwritten[0][1] <= done:
                seq = unwritten.popleft()[0]
            if seq is not None:
                connection.confirmed_at = now
                try:
                    connection.send((wire.WRITTEN, seq))
                except OSError:
                    continue  # gone: its reader closes it

    def _goodbye(self, connection: _Connection, token: int) -> None:
        self.engine.write_through(10.0)
        with contextlib.suppress(OSError):
            connection.send((wire.ACK, token))

    def _close(self, connection: _Connection) -> None:
        sock = connection.sock
        with self._changed:
            self._connections.pop(sock.fileno(), None)
            self._changed.notify_all()
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)
        with contextlib.suppress(OSError):
            sock.close()
        if connection.state is not None:
            self.engine.worker_left(connection.state)

    def _drain(self) -> None:
        """On the way out: take whatever the workers' sockets already hold, then close them."""
        for connection in list(self._connections.values()):
            connection.sock.setblocking(False)
            for _ in range(64):
                try:
                    data = connection.sock.recv(_RECV_BYTES)
                except OSError:
                    break
                if not data:
                    break
                with contextlib.suppress(Exception):
                    for message in connection.reader.feed(data):
                        self._handle(connection, message)
            self._close(connection)
        self._selector.unregister(self._listener)
        self._listener.close()
