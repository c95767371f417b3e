"""The writer thread: parses captured bodies into feature rows and writes them in batches.

It is the only thread that writes to the log store. Failures of the store (a broken, locked,
read-only or full file) are counted and retried; they never reach the request path. A write that
fails because of the store closes it: the engine then reports the store unavailable (``/readyz``
answers 503) until it opens again, tried after 1 s, then at doubling waits up to every 10 s.

Durations and periods use the monotonic clock. Stored times are wall-clock times, so when the wall
clock steps (NTP, a VM restored), retention never deletes what this process wrote within the
last ``retention`` seconds of real time, however far the wall clock moved.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, TypeVar

import duckdb

from ..baseline.file import Baseline
from ..errors import MonitorError
from ..payload.exchange import CaptureCounters, CaptureQueue
from ..payload.parse import ParseLimits
from ..stats.outliers import OutlierModel
from ..summaries.fold import SummaryFolder
from ..summaries.retention import maintain_summaries
from .columns import ColumnHints, Columnizer
from .database import Store
from .options import StoreOptions
from .row_scores import RowScorer

__all__ = ["StoreWriter"]

logger = logging.getLogger("inferwatch")

T = TypeVar("T")

_BATCH_CAPTURES = 2_000
_REOPEN_FIRST_S = 1.0
_REOPEN_EVERY_S = 10.0
_MAINTAIN_EVERY_S = 30.0
_CLOCK_STEP_S = 2.0  # a change of the wall clock against the monotonic one that is a step
# Errors that say the store itself failed (I/O, a full disk, a read-only or vanished file, an
# invalidated database), as against a bad statement: the store is closed and opened again.
_STORE_FAILURES: tuple[type[Exception], ...] = (
    duckdb.IOException,
    duckdb.TransactionException,
    duckdb.ConnectionException,
    duckdb.FatalException,
    duckdb.InternalError,
    duckdb.PermissionException,
)
_EVICT_SHARE = 0.1


class StoreWriter:
    """Owns the log store and the thread that fills it from a :class:`CaptureQueue`.

    It reads only its :class:`StoreOptions`; the engine builds them from the settings.
    """

    def __init__(
        self,
        options: StoreOptions,
        queue: CaptureQueue,
        counters: CaptureCounters,
        *,
        hints: Callable[[], ColumnHints] = ColumnHints,
        seen: Callable[[str], None] | None = None,
        outliers: Callable[[], Mapping[str | None, OutlierModel] | OutlierModel | None] = (
            lambda: None
        ),
        baselines: Callable[[], Mapping[str | None, Baseline | None]] = dict,
    ) -> None:
        self._options = options
        self._outliers = outliers
        self._scorer = RowScorer()
        self._folder = SummaryFolder(baselines)
        self._queue = queue
        self._counters = counters
        self._columnizer = Columnizer(
            limits=ParseLimits(
                max_fields_per_row=options.max_fields_per_row, redact=frozenset(options.redact)
            ),
            max_names=options.max_features,
            counters=counters,
            hints=hints,
            seen=seen,
        )
        self._store: Store | None = None
        self._store_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._busy = False
        self._calls: deque[tuple[Callable[[Store], Any], Future[Any]]] = deque()
        self._series: deque[tuple[str, dict[str, Any]]] = deque(maxlen=1_000)
        self._maintenance_asked = 0
        self._maintenance_done = 0
        self._next_open = 0.0
        self._reopen_delay = _REOPEN_FIRST_S
        self._next_maintenance = 0.0
        self._clock_offset = time.time() - time.monotonic()
        # One entry per wall-clock offset that rows were written under: (monotonic time of the
        # latest such write, wall minus monotonic time then). A new entry follows a step.
        self._frames: deque[tuple[float, float]] = deque()
        self._thread = threading.Thread(target=self._run, name="inferwatch-writer", daemon=True)
        queue.batch = _BATCH_CAPTURES
        queue.ready = self._wake.set
        self.last_error: str | None = None
        self.db_bytes = 0

    @property
    def store(self) -> Store | None:
        """The open store, or None while it cannot be opened."""
        return self._store

    def naming_report(self, model: str | None = None) -> dict[str, Any]:
        """How request columns were named so far (see ``Columnizer.naming_report``)."""
        return self._columnizer.naming_report(model)

    def start(self) -> None:
        self._open_store()
        self._thread.start()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything queued so far is written; True when it was."""
        deadline = time.monotonic() + timeout
        while (
            len(self._queue)
            or self._series
            or self._busy
            or self._maintenance_done < self._maintenance_asked
        ):
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            self._wake.set()
            time.sleep(0.005)
        return True

    def wake(self) -> None:
        """Write what is queued now instead of at the next flush interval."""
        self._wake.set()

    def call(self, work: Callable[[Store], T]) -> Future[T]:
        """Run ``work(store)`` on the writer thread, the only one that writes to the store."""
        future: Future[T] = Future()
        self._calls.append((work, future))
        self._wake.set()
        return future

    def submit_series(self, table: str, batch: dict[str, Any]) -> None:
        """Queue time-series rows for the writer thread (the oldest go first when it lags)."""
        self._series.append((table, batch))
        self._wake.set()

    def request_maintenance(self) -> None:
        """Apply retention and the size cap now instead of at the next period."""
        self._maintenance_asked += 1
        self._wake.set()

    def stop(self, timeout: float = 30.0) -> None:
        """Write every queued capture, then close the store."""
        self._stopping.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("inferwatch writer did not finish within %.0f s", timeout)
            return
        while self._calls:
            _, future = self._calls.popleft()
            future.set_exception(MonitorError("The monitoring engine has stopped."))
        with self._store_lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def _open_store(self) -> None:
        try:
            store = Store(
                self._options.db,
                memory_bytes=self._options.db_memory,
                threads=self._options.db_threads,
            )
        except MonitorError as exc:
            self._report(str(exc))
            self._retry_later()
            return
        try:
            self._columnizer.load(store.feature_columns())
            self.db_bytes = store.file_bytes()
        except duckdb.Error as exc:
            self._report(f"Cannot open the log store {self._options.db!r}: {_first_line(exc)}")
            _close_quietly(store)
            self._retry_later()
            return
        with self._store_lock:
            self._store = store
        self._reopen_delay = _REOPEN_FIRST_S
        if self.last_error is not None:
            logger.info("inferwatch: the log store %s is open again", self._options.db)
        self.last_error = None

    def _retry_later(self) -> None:
        """Open the store again after a wait that doubles with each failure, up to 10 s."""
        self._next_open = time.monotonic() + self._reopen_delay
        self._reopen_delay = min(self._reopen_delay * 2, _REOPEN_EVERY_S)

    def _failed(self, store: Store, exc: duckdb.Error, what: str) -> None:
        """Report a failed statement; when the store itself failed, close it to open it again."""
        self._report(f"{what} failed: {_first_line(exc)}")
        if not _store_failed(exc):
            return
        with self._store_lock:
            if self._store is not store:
                return
            self._store = None
        _close_quietly(store)
        self._retry_later()

    def _run(self) -> None:
        self._next_maintenance = time.monotonic()
        while True:
            stopping = self._stopping.is_set()
            self._busy = True
            self._watch_clock()
            batch = self._queue.take(_BATCH_CAPTURES)
            if batch:
                self._write(batch)
            if self._series:
                self._write_series()
            while self._calls:
                self._run_call(*self._calls.popleft())
            now = time.monotonic()
            if self._store is None and now >= self._next_open and not stopping:
                self._open_store()
            asked = self._maintenance_asked
            if (
                asked > self._maintenance_done or now >= self._next_maintenance
            ) and self._store is not None:
                self._next_maintenance = now + _MAINTAIN_EVERY_S
                self._maintain()
            self._maintenance_done = asked
            self._busy = False
            if stopping:
                if not batch:
                    return
            elif len(self._queue) < _BATCH_CAPTURES:
                # Each insert has a fixed cost of milliseconds: gather a batch unless one is ready.
                self._wake.wait(self._options.flush_interval)
                self._wake.clear()

    def _write(self, captures: list[tuple[Any, ...]]) -> None:
        store = self._store
        if store is None:
            self._counters.write_errors += len(captures)
            return
        try:
            batch = self._columnizer.columns(captures)
            scores = self._score(batch.features)
            try:
                store.insert(*batch, scores=scores, fold=self._folder.fold)
            except Exception as exc:
                if isinstance(exc, duckdb.Error) and _store_failed(exc):
                    raise
                # a summary that cannot be made must not cost the rows: they go in without it
                self._report(f"Summarizing captured rows failed: {_first_line(exc)}")
                store.insert(*batch, scores=scores)
        except duckdb.Error as exc:
            # Failed first: once the count shows, readiness already says why.
            self._failed(store, exc, "Writing to the log store")
            self._counters.write_errors += len(captures)
            return
        except Exception as exc:  # a bug in parsing must not stop the writer
            self._counters.write_errors += len(captures)
            self._report(f"Preparing captured rows failed: {exc!r}")
            logger.exception("inferwatch writer failed on a batch")
            return
        if batch.new_columns is not None:
            self._columnizer.ids.mark_stored(batch.new_columns["id"])
        self._counters.stored += len(captures)
        self._counters.rows_stored += len(batch.features["num"]) if batch.features else 0
        self.db_bytes = store.file_bytes()
        self._note_written()

    def _score(self, features: dict[str, Any] | None) -> dict[str, Any] | None:
        """The batch's outlier scores; a failure to score is reported and the rows kept."""
        try:
            return self._scorer.scores(self._outliers(), self._columnizer.ids, features)
        except Exception as exc:  # a bug in scoring must cost the scores only, not the rows
            message = f"Scoring captured rows failed: {exc!r}"
            if message != self.last_error:
                logger.exception("inferwatch writer failed to score a batch")
            self._report(message)
            return None

    def _run_call(self, work: Callable[[Store], Any], future: Future[Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        store = self._store
        if store is None:
            future.set_exception(MonitorError(f"The log store is unavailable: {self.last_error}"))
            return
        try:
            future.set_result(work(store))
        except BaseException as exc:
            if isinstance(exc, duckdb.Error) and _store_failed(exc):
                # Callers answer a MonitorError as "unavailable" (503), not as a bug.
                self._failed(store, exc, "A log store call")
                unavailable = MonitorError(f"The log store failed: {_first_line(exc)}")
                unavailable.__cause__ = exc
                future.set_exception(unavailable)
            else:
                future.set_exception(exc)

    def _write_series(self) -> None:
        while self._series:
            table, batch = self._series.popleft()
            store = self._store
            if store is None:
                continue
            try:
                store.insert_series(table, batch)
            except duckdb.Error as exc:
                self._failed(store, exc, f"Writing {table}")
            else:
                self._note_written()

    def _maintain(self) -> None:
        store = self._store
        if store is None:
            return
        options, counters = self._options, self._counters
        try:
            cutoff = datetime.fromtimestamp(self._retention_cutoff(), UTC)
            counters.rows_expired += store.delete_older_than(cutoff)
            # Evicting a share at a time keeps one pass short; the next pass goes on if needed.
            if store.data_bytes() > options.max_db_bytes:
                counters.rows_evicted += store.evict_oldest(_EVICT_SHARE)
                store.checkpoint()
            maintain_summaries(
                store.writer,
                datetime.now(UTC).replace(tzinfo=None),
                retention_s=options.summary_retention,
                rollup_after_s=options.summary_rollup_after,
            )
            self.db_bytes = store.file_bytes()
        except duckdb.Error as exc:
            self._failed(store, exc, "Log store maintenance")

    def _note_written(self) -> None:
        """Remember that rows were written now, under the wall clock's present offset."""
        now = time.monotonic()
        offset = time.time() - now
        frames = self._frames
        if frames and abs(frames[-1][1] - offset) < _CLOCK_STEP_S:
            frames[-1] = (now, frames[-1][1])
        else:
            frames.append((now, offset))

    def _retention_cutoff(self) -> float:
        """The wall time before which rows are older than ``retention``, steps of the clock aside.

        Rows carry the wall time they were written under. After the clock stepped forward, the
        rows written before the step in the last ``retention`` seconds of monotonic time would
        look older than they are: the cutoff is taken in the earliest wall-clock frame that such
        rows were written under, so that they stay until they are in fact that old.
        """
        now = time.monotonic()
        since = now - self._options.retention
        frames = self._frames
        while frames and frames[0][0] < since:
            frames.popleft()
        offset = min((frame[1] for frame in frames), default=math.inf)
        return now + min(offset, time.time() - now) - self._options.retention

    def _watch_clock(self) -> None:
        """Log a step of the wall clock, and apply retention at once with the guard above."""
        offset = time.time() - time.monotonic()
        step = offset - self._clock_offset
        if abs(step) < _CLOCK_STEP_S:
            return
        self._clock_offset = offset
        logger.warning(
            "inferwatch: the wall clock stepped %s by %.0f s; new rows carry the new time, and "
            "retention keeps every row written in the last %.0f s whatever its time",
            "forward" if step > 0 else "back",
            abs(step),
            self._options.retention,
        )
        self._next_maintenance = 0.0

    def _report(self, message: str) -> None:
        if message != self.last_error:
            logger.warning("inferwatch: %s", message)
        self.last_error = message


def _store_failed(exc: duckdb.Error) -> bool:
    return isinstance(exc, _STORE_FAILURES) or "invalidated" in str(exc)


def _close_quietly(store: Store) -> None:
    with contextlib.suppress(duckdb.Error, MonitorError):
        store.close()


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__).rstrip(".") + "."
