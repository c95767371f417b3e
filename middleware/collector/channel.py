"""The worker's side of the hand-off: one list the request path appends to, one sender thread.

The request path appends one tuple per finished request to :attr:`CollectorChannel.pending` (a
list append is atomic under the GIL) and never waits, locks or raises. The sender thread takes
what is pending every few milliseconds, encodes it as one frame and writes it to the collector's
Unix socket without blocking. While the collector is away (not yet started, restarting) frames
wait in a buffer of at most ``queue_size`` requests; beyond it they are dropped and counted, and
the counts reach the collector with the next batch it gets. One system call per request was
the costliest way of handing over in the measured probes, which is why requests are batched.

A batch sent is kept until the collector says it is written (``WRITTEN``): if the collector dies
first, the batches it had not written are sent again to the next one, so a crash loses nothing
that fits in the worker's buffer. What did not fit (released unconfirmed) is counted as dropped
when the collector is lost. The per-second counts of confirmed batches (the last health window)
go to each new collector in the hello, so that its ``/health`` counts what came before it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import random
import select
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

from . import wire
from .options import ChannelOptions
from .paths import CollectorPaths

__all__ = ["CollectorChannel"]

logger = logging.getLogger("inferwatch")

# One batch per 20 ms: each wake-up of this thread takes the GIL from the model's threads and
# cost ~100 µs of the worker's CPU, so every 5 ms was ~15 µs per request at 2,000 req/s.
_SEND_EVERY_S = 0.02
_GAUGE_EVERY_S = 0.25  # the in-flight gauge, sent alone while no request finishes
_RECONNECT_EVERY_S = 0.01
_SPAWN_EVERY_S = 1.0
_BUFFER_BYTES = 32 * 2**20  # frames kept while the collector is away or behind, at most
_RECV_BYTES = 65_536
_EFFICIENCY_FIELDS = 5  # (method, route, status, latency_s, ttfb_s); a capture has 17

_channels: weakref.WeakSet[CollectorChannel] = weakref.WeakSet()


class _Frame:
    """One frame to send, and what it holds: requests, captures and their per-status counts."""

    __slots__ = ("captures", "data", "kind", "requests", "second", "seq", "statuses", "totals")

    def __init__(
        self,
        data: bytes | None,
        kind: int,
        requests: int = 0,
        captures: int = 0,
        seq: int = 0,
        totals: tuple[int, int] = (0, 0),
        statuses: dict[int, int] | None = None,
    ) -> None:
        self.data = data  # None once released from the buffer unconfirmed
        self.kind = kind
        self.requests = requests
        self.captures = captures
        self.seq = seq
        self.totals = totals  # the worker's (dropped_requests, dropped_captures) when taken
        self.statuses = statuses
        self.second = int(time.time())


class CollectorChannel:
    """Hands a worker's requests to the collector of its log store.

    ``pending.append(record)`` is the whole request-path API: ``record`` is either an efficiency
    tuple ``(method, route, status, latency_s, ttfb_s)`` or a capture tuple in
    :class:`~inferwatch.middleware.payload.exchange.Capture`'s field order, which carries the same
    figures.

    It reads only its :class:`ChannelOptions`. ``start`` starts a collector for these paths when
    none answers (see :func:`~inferwatch.middleware.collector.election.spawn_collector`); without
    it the channel waits for one started elsewhere.
    """

    def __init__(
        self, options: ChannelOptions, *, start: Callable[[CollectorPaths], bool] | None = None
    ) -> None:
        self.options = options
        self.paths = CollectorPaths.for_db(options.db)
        self._start = start
        self.pending: list[tuple[Any, ...]] = []
        self.put = self.pending.append
        self.in_flight = 0
        self.running = False
        self._lifecycle = threading.Lock()
        self._reset()
        _channels.add(self)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._nonce = random.getrandbits(62)
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._bye_token: int | None = None
        self._acked = threading.Event()
        self._sock: socket.socket | None = None
        self._reader = wire.FrameReader()
        # To send, in order; the first may be partly sent (``_sent`` bytes of it).
        self._frames: deque[_Frame] = deque()
        # Sent batches the collector has not yet confirmed written, oldest first.
        self._unconfirmed: deque[_Frame] = deque()
        self._kept = 0  # bytes of unconfirmed batches still held for sending again
        self._kept_requests = 0
        self._seq = 0
        self._resent_upto = 0  # the last batch sent again after the collector was lost
        # What collectors confirmed: the drops they counted, and per second the requests by
        # status (the health window's worth), handed to each new collector in the hello.
        self._confirmed_drops: tuple[int, int] = (0, 0)
        self._history: deque[tuple[int, dict[int, int]]] = deque()
        self._finish_by = 0.0
        self._buffered = 0
        self._buffered_requests = 0
        self._sent = 0
        self._blocked = False  # the socket had no room for the first frame
        self._next_connect = 0.0
        self._next_spawn = 0.0
        self._warned = False
        # Cumulative since this worker started: the collector turns them into its own counts.
        self.requests = 0
        self.captures = 0
        self.dropped_requests = 0
        self.dropped_captures = 0
        self._reported: tuple[int, int, int] = (-1, -1, -1)
        self._gauge_due = 0.0
        self.connected = False
        self.problem: str | None = None  # why no collector could be started, while that lasts

    def start(self) -> None:
        """Start the sender thread in this process (again after a fork); then do nothing."""
        with self._lifecycle:
            if self.running and self._pid == os.getpid():
                return
            if self._pid != os.getpid():
                self._forked()
            self.running = True
            self._thread = threading.Thread(target=self._run, name="inferwatch-sender", daemon=True)
            self._thread.start()
            atexit.register(self.stop, 2.0)

    async def wait_connected(self, timeout: float) -> bool:
        """Wait (without blocking the event loop) until the collector takes this worker's frames."""
        deadline = time.monotonic() + timeout
        while not self.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.connected

    def stop(self, timeout: float = 5.0) -> bool:
        """Send everything pending and a goodbye; wait for the collector to have written it.

        Returns True when the collector acknowledged within ``timeout`` seconds.
        """
        with self._lifecycle:
            if not self.running or self._pid != os.getpid():
                return False
            self.running = False
        atexit.unregister(self.stop)
        self._bye_token = random.getrandbits(30)
        self._finish_by = time.monotonic() + timeout
        self._stopping.set()
        acked = self._acked.wait(timeout)
        if self._thread is not None:
            self._thread.join(0.5)
        self._close()
        if not acked and (self.pending or self._frames):
            logger.warning("inferwatch: the collector did not confirm this worker's last captures")
        return acked

    def _forked(self) -> None:
        """In a forked child: nothing of the parent's thread or socket is this process's."""
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.detach()
        del self.pending[:]
        self._reset()

    # The sender thread.

    def _run(self) -> None:
        failed: str | None = None
        while True:
            try:
                if self._tick():
                    return
                failed = None
            except Exception as exc:  # the hand-off goes on: a failure is logged, then retried
                if repr(exc) != failed:
                    logger.exception("inferwatch: the sender thread failed; retrying")
                failed = repr(exc)
                self._stopping.wait(_RECONNECT_EVERY_S)

    def _tick(self) -> bool:
        """Send one batch and pump until the next is due; True once the goodbye is done."""
        stopping = self._stopping.is_set()
        self._take()
        if stopping:
            if self._bye_token is not None:  # else it was sent, and failed on the way
                self._queue_frame(_Frame(wire.encode((wire.BYE, self._bye_token)), wire.BYE))
                self._bye_token = None
                self._finish()
            return True
        # One batch per tick, however often the collector writes to us meanwhile: taking
        # whatever was pending at every wake-up made frames of one or two requests.
        next_take = time.monotonic() + _SEND_EVERY_S
        while not self._stopping.is_set():
            left = next_take - time.monotonic()
            if left <= 0:
                break
            self._pump(left)
        return False

    def _finish(self) -> None:
        """Deliver the last frames and wait for the collector's ACK of the goodbye."""
        while not self._acked.is_set() and time.monotonic() < self._finish_by:
            if self._sock is None and time.monotonic() >= self._next_connect:
                self._connect(spawn=False)
                if self._sock is None:
                    self._next_connect = time.monotonic() + 0.1
                    if not os.path.exists(self.paths.ingest):
                        return  # no collector to say goodbye to
            self._pump(0.01)

    def _take(self) -> None:
        """Encode what the request path appended since the last look as one frame."""
        pending = self.pending
        count = len(pending)
        records = pending[:count]
        del pending[:count]  # appends made meanwhile land after ``count``: none is lost
        counts = (self.dropped_requests, self.dropped_captures, self.in_flight)
        if (
            not records
            and (
                counts == self._reported
                # The in-flight gauge alone is worth a frame only now and then.
                or (counts[:2] == self._reported[:2] and time.monotonic() < self._gauge_due)
            )
        ):
            return
        self._gauge_due = time.monotonic() + _GAUGE_EVERY_S
        captures = 0
        statuses: dict[int, int] = {}
        for record in records:
            if len(record) == _EFFICIENCY_FIELDS:
                status = record[2]
            else:
                captures += 1
                status = record[5]
            statuses[status] = statuses.get(status, 0) + 1
        self.requests += count
        self.captures += captures
        self._reported = counts
        totals = (self.requests, self.captures, self.dropped_requests, self.dropped_captures)
        self._seq += 1
        data = wire.encode((wire.BATCH, records, totals, self.in_flight, self._seq))
        drops = (self.dropped_requests, self.dropped_captures)
        self._queue_frame(_Frame(data, wire.BATCH, count, captures, self._seq, drops, statuses))

    def _queue_frame(self, frame: _Frame) -> None:
        assert frame.data is not None
        size, requests = len(frame.data), frame.requests
        if requests and (
            self._buffered + size > _BUFFER_BYTES
            or self._buffered_requests + requests > self.options.queue_size
        ):
            self._drop(requests, frame.captures)
            return
        self._frames.append(frame)
        self._buffered += size
        self._buffered_requests += requests

    def _drop(self, requests: int, captures: int) -> None:
        self.dropped_requests += requests
        self.dropped_captures += captures

    def _pump(self, wait: float) -> None:
        """Write buffered frames, read the collector's messages; sleep at most ``wait``."""
        sock = self._sock
        if sock is None:
            now = time.monotonic()
            if now >= self._next_connect:
                self._connect(spawn=now >= self._next_spawn)
                sock = self._sock
            if sock is None:
                self._stopping.wait(wait)
                return
        try:
            if self._frames and not self._blocked:
                self._write(sock)
            # poll, not select: a busy server's descriptors go past select's limit of 1024.
            # POLLOUT only while a frame waits for room in the socket.
            poller = select.poll()
            poller.register(sock, select.POLLIN | (select.POLLOUT if self._blocked else 0))
            events = poller.poll(wait * 1000)
            for _, event in events:
                if event & select.POLLOUT:
                    self._write(sock)
                if event & (select.POLLIN | select.POLLHUP | select.POLLERR):
                    data = sock.recv(_RECV_BYTES)
                    if not data:
                        raise ConnectionResetError("the collector closed the connection")
                    for message in self._reader.feed(data):
                        self._handle(message)
        except (OSError, ValueError) as exc:
            self._lost(exc)

    def _write(self, sock: socket.socket) -> None:
        self._blocked = False
        frames = self._frames
        while frames:
            frame = frames[0]
            data = frame.data
            assert data is not None
            try:
                sent = sock.send(memoryview(data)[self._sent :] if self._sent else data)
            except BlockingIOError:
                self._blocked = True
                return
            self._sent += sent
            if self._sent < len(data):
                self._blocked = True
                return  # the socket is full: the rest waits for room
            frames.popleft()
            self._buffered -= len(data)
            self._buffered_requests -= frame.requests
            self._sent = 0
            if frame.kind == wire.BATCH:
                self._keep(frame)

    def _keep(self, frame: _Frame) -> None:
        """Hold a sent batch until it is confirmed; release the oldest beyond the bounds."""
        assert frame.data is not None
        self._unconfirmed.append(frame)
        self._kept += len(frame.data)
        self._kept_requests += frame.requests
        for old in self._unconfirmed:
            if self._kept <= _BUFFER_BYTES and self._kept_requests <= self.options.queue_size:
                break
            if old.data is not None:
                # Still counted once the collector is lost before confirming it.
                self._kept -= len(old.data)
                self._kept_requests -= old.requests
                old.data = None

    def _confirmed(self, seq: int) -> None:
        """The collector wrote every batch up to ``seq``: forget them, remember their counts."""
        unconfirmed = self._unconfirmed
        while unconfirmed and unconfirmed[0].seq <= seq:
            frame = unconfirmed.popleft()
            if frame.data is not None:
                self._kept -= len(frame.data)
                self._kept_requests -= frame.requests
            self._confirmed_drops = frame.totals
            if frame.statuses:
                history = self._history
                if history and history[-1][0] == frame.second:
                    merged = history[-1][1]
                    for status, count in frame.statuses.items():
                        merged[status] = merged.get(status, 0) + count
                else:
                    history.append((frame.second, dict(frame.statuses)))
        horizon = time.time() - self.options.health_window
        while self._history and self._history[0][0] < horizon:
            self._history.popleft()

    def _handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == wire.FLUSH:
            # A read-your-writes barrier: everything appended before now goes before the marker.
            self._take()
            self._queue_frame(_Frame(wire.encode((wire.MARKER, message[1])), wire.MARKER))
            if self._sock is not None:
                self._write(self._sock)
        elif kind == wire.WRITTEN:
            self._confirmed(message[1])
        elif kind == wire.ACK:
            self._acked.set()

    def _connect(self, *, spawn: bool) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.paths.ingest)
        except OSError:
            sock.close()
            self._next_connect = time.monotonic() + _RECONNECT_EVERY_S
            if spawn and self._start is not None:
                self._next_spawn = time.monotonic() + _SPAWN_EVERY_S
                try:
                    self._start(self.paths)
                except Exception as exc:  # never into the worker: said in /readyz and the log
                    problem = f"the collector cannot start: {exc}"
                    if problem != self.problem:
                        logger.error("inferwatch: %s", problem)
                    self.problem = problem
                self._next_connect = 0.0
            return
        sock.setblocking(False)
        self._sock = sock
        self._reader = wire.FrameReader()
        # The hello goes first, before frames kept while the collector was away.
        history = [(second, statuses) for second, statuses in self._history]
        hello = (wire.HELLO, self._pid, self._nonce, self._confirmed_drops, history)
        if self._resent_upto:
            resent = _Frame(wire.encode((wire.RESENT, self._resent_upto)), wire.RESENT)
            self._frames.appendleft(resent)
            self._resent_upto = 0
        self._frames.appendleft(_Frame(wire.encode(hello), wire.HELLO))
        self._reported = (-1, -1, -1)
        self.connected = True
        self.problem = None
        if self._warned:
            logger.info("inferwatch: connected to the collector again")
            self._warned = False

    def _lost(self, exc: BaseException) -> None:
        """The collector went away: what it had not confirmed is sent again to the next one."""
        if not self._warned:
            logger.warning("inferwatch: lost the collector (%s); reconnecting", exc)
            self._warned = True
        self._sent = 0  # a frame it got part of is sent again whole
        self._blocked = False
        again = []
        for frame in self._unconfirmed:
            if frame.data is None:
                self._drop(frame.requests, frame.captures)  # released unconfirmed: maybe lost
            else:
                again.append(frame)
        if again:
            self._resent_upto = again[-1].seq
        self._unconfirmed.clear()
        self._kept = self._kept_requests = 0
        # Hellos, markers and empty batches were for the old connection; the goodbye is resent.
        kept = (f for f in self._frames if f.requests or f.kind == wire.BYE)
        self._frames = deque([*again, *kept])
        self._buffered = sum(len(f.data or b"") for f in self._frames)
        self._buffered_requests = sum(f.requests for f in self._frames)
        self._close()
        self._next_connect = 0.0

    def _close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None
        self.connected = False


def _after_fork() -> None:
    for channel in list(_channels):
        if channel._pid != os.getpid():
            channel.running = False


os.register_at_fork(after_in_child=_after_fork)
