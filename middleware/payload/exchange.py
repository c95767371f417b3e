"""What the request path hands to the writer: a captured exchange, a bounded queue, counters.

The request path only appends to a deque and bumps integers, so the model never waits on the
monitor. Each counter has one writing thread: the event loop counts what it samples and drops,
the writer thread what it stores or fails to store.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

__all__ = ["Capture", "CaptureCounters", "CaptureQueue"]


class Capture(NamedTuple):
    """One sampled request and its response: body chunks as received, sizes and timings.

    Bodies stay as the chunks the request path collected; the writer joins them. In the queue
    a capture is a plain tuple of atoms (numbers, strings, bytes, tuples of bytes), which
    Python's garbage collector stops tracking at its first pass: thousands wait there between
    writes, and as tracked objects they made full collections, which walk the model's whole
    heap, run several times as often.
    """

    ts: float
    request_id: str
    method: str
    path: str
    route: str
    status: int
    latency_s: float
    ttfb_s: float | None
    request_body: tuple[bytes, ...]
    request_bytes: int
    request_truncated: bool
    request_content_type: str | None
    response_body: tuple[bytes, ...]
    response_bytes: int
    response_truncated: bool
    response_content_type: str | None
    error: str | None


@dataclass(slots=True)
class CaptureCounters:
    """Monotonic counts of what happened to captured traffic; read by /health and /metrics."""

    sampled: int = 0
    dropped: int = 0
    stored: int = 0
    write_errors: int = 0
    rows_stored: int = 0
    parse_errors: int = 0
    fields_capped: int = 0
    fields_redacted: int = 0
    names_capped: int = 0
    models_capped: int = 0
    rows_expired: int = 0
    rows_evicted: int = 0

    def snapshot(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


class CaptureQueue:
    """A bounded hand-over from the event loop to the writer thread that drops when full.

    ``deque.append`` and ``popleft`` are atomic in CPython, so neither side takes a lock.
    """

    __slots__ = ("_items", "batch", "capacity", "counters", "ready")

    def __init__(
        self,
        capacity: int,
        counters: CaptureCounters,
        *,
        batch: int = 2_000,
        ready: Callable[[], None] | None = None,
    ) -> None:
        self._items: deque[tuple[Any, ...]] = deque()
        self.capacity = capacity
        self.counters = counters
        self.batch = batch
        self.ready = ready

    def put(self, capture: tuple[Any, ...]) -> bool:
        """Queue a capture, or count it as dropped when the writer has fallen behind.

        The request path passes a plain tuple in :class:`Capture`'s field order: only an exact
        tuple is untracked by the garbage collector (a Capture is a tuple subclass, and kept
        tracked), and building one is cheaper too. A Capture is accepted as well.
        """
        self.counters.sampled += 1
        if len(self._items) >= self.capacity:
            self.counters.dropped += 1
            return False
        self._items.append(capture)
        if self.ready is not None and len(self._items) == self.batch:
            self.ready()  # a full batch: wake the writer now instead of at its next flush
        return True

    def take(self, limit: int) -> list[tuple[Any, ...]]:
        """Remove and return up to ``limit`` captures (tuples, as put), oldest first."""
        items = self._items
        batch: list[tuple[Any, ...]] = []
        while items and len(batch) < limit:
            batch.append(items.popleft())
        return batch

    def __len__(self) -> int:
        return len(self._items)
