"""The monitoring engine that the middleware and the sidecar share.

It owns the capture queue, the writer thread and the log store, starts once and stops once,
and answers the monitor API's questions. It never raises into the model's traffic: failures
are counted and reported through :meth:`Engine.capture_health` and ``last_error``.
"""

from __future__ import annotations

import atexit
import logging
import threading

from ._capture import CaptureCounters, CaptureQueue
from ._settings import Settings
from ._writer import ColumnHints, StoreWriter

__all__ = ["Engine"]

logger = logging.getLogger("inferwatch")


class Engine:
    """Everything inferwatch runs beside the model, built from one :class:`Settings`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.counters = CaptureCounters()
        self.queue = CaptureQueue(settings.queue_size, self.counters)
        self.writer = StoreWriter(settings, self.queue, self.counters, hints=self.column_hints)
        self._lifecycle = threading.Lock()
        self.running = False
        self._stopped = False

    def start(self) -> None:
        """Open the store and start the background threads; a second call does nothing."""
        with self._lifecycle:
            if self.running or self._stopped:
                return
            self.writer.start()
            self.running = True
            # Processes that never send lifespan shutdown still get their captures written.
            atexit.register(self.stop)
        logger.info("inferwatch engine started (store %s)", self.settings.db)

    def stop(self, timeout: float = 30.0) -> None:
        """Write everything already captured, then stop; a second call does nothing."""
        with self._lifecycle:
            if not self.running:
                return
            self.running = False
            self._stopped = True
        self.writer.stop(timeout)
        atexit.unregister(self.stop)
        logger.info(
            "inferwatch engine stopped: %d sampled, %d stored, %d dropped, %d write errors",
            self.counters.sampled,
            self.counters.stored,
            self.counters.dropped,
            self.counters.write_errors,
        )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything captured so far is in the store."""
        return self.writer.flush(timeout)

    def readiness_problems(self) -> list[str]:
        """Why the engine cannot do its job yet; empty when it can."""
        problems = []
        if not self.running:
            problems.append("the monitoring engine is not running")
        elif self.writer.store is None:
            problems.append(f"the log store is unavailable: {self.writer.last_error}")
        return problems

    def column_hints(self) -> ColumnHints:
        """Names for positional payloads; the baseline supplies them once one is loaded."""
        return ColumnHints()

    def capture_health(self) -> dict[str, int | str | None]:
        """The /health ``capture`` object."""
        counters = self.counters
        return {
            "sampled": counters.sampled,
            "stored": counters.stored,
            "dropped": counters.dropped,
            "write_errors": counters.write_errors,
            "queue_depth": len(self.queue),
            "db_bytes": self.writer.db_bytes,
            "parse_errors": counters.parse_errors,
            "fields_capped": counters.fields_capped,
            "fields_redacted": counters.fields_redacted,
            "names_capped": counters.names_capped,
            "rows_stored": counters.rows_stored,
            "rows_expired": counters.rows_expired,
            "rows_evicted": counters.rows_evicted,
            "last_error": self.writer.last_error,
        }
