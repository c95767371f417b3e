"""The frames workers and the collector exchange over the ingest socket.

A frame is a 4-byte little-endian length and a ``marshal`` payload: a tuple whose first item is
its kind. marshal reads and writes the tuples of atoms that captures are at C speed, and unlike
pickle it cannot run code when it reads.
"""

from __future__ import annotations

import marshal
import struct
from collections.abc import Iterator
from typing import Any

__all__ = [
    "ACK",
    "BATCH",
    "BYE",
    "CLIENT_HEADER",
    "FLUSH",
    "HELLO",
    "MARKER",
    "RESENT",
    "ROOT_PATH_HEADER",
    "WRITTEN",
    "FrameReader",
    "encode",
]

# Worker to collector.
# (HELLO, pid, nonce, (dropped_requests, dropped_captures), history): the drops that earlier
# collectors confirmed, and per second (wall-clock second, requests, {status: count}) what they
# confirmed in the last health window, which a new collector counts as its own.
HELLO = 0
# (BATCH, records, (requests, captures, dropped_requests, dropped_captures), in_flight, seq)
BATCH = 1
MARKER = 2  # (MARKER, token): every record sent before it is in
BYE = 3  # (BYE, token): the worker is leaving; answer ACK once its captures are written
# (RESENT, seq): batches up to seq were sent to a collector that died before confirming them;
# their captures may be in the store already, and are written only where they are not.
RESENT = 4
# Collector to worker.
FLUSH = 10  # (FLUSH, token): send what you hold, then MARKER token
ACK = 11  # (ACK, token)
WRITTEN = 12  # (WRITTEN, seq): every batch up to seq is written (or counted lost) in the store

# Over the API socket, set by the worker only (a client's own copies are dropped): the path
# under which it serves the API (for links), and its client's address (``host:port``), which
# decides who may read payloads (``middleware/api/access.py``) as it would in the worker.
ROOT_PATH_HEADER = b"x-inferwatch-root-path"
CLIENT_HEADER = b"x-inferwatch-client"

_LENGTH = struct.Struct("<I")
_MAX_FRAME = 256 * 2**20


def encode(message: tuple[Any, ...]) -> bytes:
    """One frame holding ``message``."""
    payload = marshal.dumps(message, 4)
    return _LENGTH.pack(len(payload)) + payload


class FrameReader:
    """Splits a byte stream into messages; fed whatever ``recv`` returned."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[tuple[Any, ...]]:
        """The messages completed by ``data``, in order."""
        buffer = self._buffer
        buffer += data
        start = 0
        end = len(buffer)
        while end - start >= 4:
            (size,) = _LENGTH.unpack_from(buffer, start)
            if size > _MAX_FRAME:
                raise ValueError(f"a frame of {size} bytes is larger than any sender writes")
            if end - start - 4 < size:
                break
            message = marshal.loads(memoryview(buffer)[start + 4 : start + 4 + size])
            start += 4 + size
            yield message
        if start:
            del buffer[:start]
