"""Where the collector of one log store keeps its sockets, locks and log: beside the store."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass

__all__ = ["CollectorPaths"]

# sun_path holds 108 bytes with its final NUL; a little room is kept for the suffixes.
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True, slots=True)
class CollectorPaths:
    """The files one collector uses, derived from the real path of its log store.

    Every worker and the collector derive the same names from the same store, wherever they run
    from. A socket path too long for ``sun_path`` moves to the runtime (or temp) folder under a
    name hashed from the store's real path.
    """

    db: str
    ingest: str
    api: str
    lock: str
    spawn_lock: str
    standby_lock: str
    log: str

    @classmethod
    def for_db(cls, db: str) -> CollectorPaths:
        real = os.path.realpath(db)
        ingest, api = real + ".sock", real + ".api.sock"
        if len(api.encode()) > _MAX_SOCKET_PATH:
            folder = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
            digest = hashlib.sha256(real.encode()).hexdigest()[:16]
            ingest = os.path.join(folder, f"inferwatch-{digest}.sock")
            api = os.path.join(folder, f"inferwatch-{digest}.api.sock")
        return cls(
            db=real,
            ingest=ingest,
            api=api,
            lock=real + ".collector.lock",
            spawn_lock=real + ".spawn.lock",
            standby_lock=real + ".standby.lock",
            log=real + ".collector.log",
        )
