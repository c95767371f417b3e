"""Shipping this replica's summaries (and sampled raw rows) to the fleet's shared storage.

Every ``fleet_interval`` the shipper looks at the hours within ``fleet_lookback``, and for each
(table, model, hour) whose rows grew since it last shipped them it writes that hour's file
again, whole: every closed minute of the hour that the store holds, merged and sorted, so that
the same rows always make the same bytes (:mod:`._fleet_layout` names the file and writes it
atomically). A minute is closed ``settle`` seconds after it ends. Rows that arrive late for a
shipped hour make the hour grow and ship again within the lookback; later ones stay in the
local store only (``inferwatch export --to`` ships any span again). A failed shipment is
logged, counted and shown in /health; the next interval tries again.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..errors import MonitorError
from .layout import FleetStorage, file_path, storage_options
from .options import FleetOptions

__all__ = ["FleetShipper", "FleetTable", "fleet_tables", "hour_file", "table_files"]

logger = logging.getLogger("inferwatch")

_SETTLE_S = 5.0  # beyond flush_interval: a minute's rows are written this long after it ends
_FINAL_WAIT_S = 30.0
_LOGGED_BYTES = 2**22  # a file this large takes a while to upload: the log says when it starts


@dataclass(frozen=True, slots=True)
class FleetTable:
    """One shipped table: how its rows of a model's span are read, and how a span grows."""

    name: str
    rows_sql: str  # $model, $start, $end (and $share): the file's rows, in a fixed order
    growth_sql: str  # $start, $end: (model, hour, measure that grows with the rows) per hour
    closed_sql: str | None = None  # the rows of a closed hour, when they differ from rows_sql


# A closed hour ships as hour totals (step_s 3600): a fleet check reads one row per replica,
# hour and counted thing, not sixty; the open hour's closed minutes ship as they are.
# Rows alike in minute, step and what they count merge (docs/summaries.md).
_SUMMARY_ROWS = """
    SELECT {minute} AS minute, {step} AS step_s, baseline, role, name, what, key,
           sum(n)::BIGINT AS n, sum(total) AS total, sum(squares) AS squares, min(low) AS low,
           max(high) AS high
    FROM summaries
    WHERE model = $model AND minute >= $start AND minute < $end
    GROUP BY ALL ORDER BY ALL
"""
SUMMARIES = FleetTable(
    "summaries",
    _SUMMARY_ROWS.format(minute="minute", step="step_s"),
    """
    SELECT model, date_trunc('hour', minute) AS hour, sum(n)::BIGINT
    FROM summaries WHERE minute >= $start AND minute < $end GROUP BY ALL
    """,
    _SUMMARY_ROWS.format(
        minute="CASE WHEN step_s <= 3600 THEN date_trunc('hour', minute) ELSE minute END",
        step="greatest(step_s, 3600)",
    ),
)
RAW = FleetTable(
    "raw",
    # a request's rows are all shipped or none: the sample is by request id
    """
    SELECT ts, request_id, row_index, role, name, type, num, str
    FROM features
    WHERE coalesce(model, '') = $model AND ts >= $start AND ts < $end
      AND md5_number_lower(request_id) % 1000000 < $share
    ORDER BY ts, request_id, row_index, role, name, type
    """,
    """
    SELECT coalesce(model, ''), date_trunc('hour', ts) AS hour, count(*)
    FROM requests WHERE ts >= $start AND ts < $end GROUP BY ALL
    """,
)


def fleet_tables(raw: float) -> tuple[FleetTable, ...]:
    """The tables a replica ships: summaries, and raw rows when ``fleet_raw`` is above zero."""
    return (SUMMARIES, RAW) if raw > 0 else (SUMMARIES,)


def hour_file(
    cursor: Any,
    table: FleetTable,
    model: str,
    start: datetime,
    end: datetime,
    share: float,
    *,
    closed: bool = False,
) -> bytes | None:
    """The Parquet bytes of ``table``'s rows of ``model`` in [start, end); None when none.
    ``closed``: [start, end) is a whole hour that gets no more rows."""
    import pyarrow.parquet as pq

    sql = table.closed_sql if closed and table.closed_sql else table.rows_sql
    params: dict[str, Any] = {"model": model, "start": start, "end": end}
    if "$share" in sql:
        params["share"] = int(share * 1_000_000)
    relation = cursor.sql(sql, params=params)
    rows = relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
    if rows.num_rows == 0:
        return None
    buffer = io.BytesIO()
    pq.write_table(rows, buffer, compression="zstd")
    return buffer.getvalue()


def table_files(
    cursor: Any,
    table: FleetTable,
    start: datetime,
    end: datetime,
    share: float,
    replica: str,
) -> Iterator[tuple[str, bytes]]:
    """(path below the fleet URL, Parquet bytes) of each model and hour of ``table`` that has
    rows in [start, end): what ``inferwatch export --to`` writes."""
    grown = cursor.execute(table.growth_sql, {"start": start, "end": end}).fetchall()
    for model, hour, _ in sorted(grown):
        whole = start <= hour and hour + timedelta(hours=1) <= end
        data = hour_file(
            cursor,
            table,
            model,
            max(hour, start),
            min(hour + timedelta(hours=1), end),
            share,
            closed=whole,
        )
        if data is not None:
            yield file_path(table.name, model, hour, replica), data


class FleetShipper:
    """Ships one store's closed minutes to ``fleet_url``; run :meth:`ship` periodically."""

    def __init__(self, options: FleetOptions, cursors: Callable[[], Any]) -> None:
        if not options.url:
            raise MonitorError("Missing setting fleet_url.")
        self.options = options
        self.replica = options.replica
        self._storage_options = storage_options(options.storage_options)
        self._cursors = cursors
        self._storage: FleetStorage | None = None
        self._tables = fleet_tables(options.raw)
        # what each file shipped holds: its rows' growth measure, and whether its hour was closed
        self._shipped: dict[tuple[str, str, datetime], tuple[int, bool]] = {}
        self._lock = threading.Lock()  # one shipment at a time (the periodic one, the last one)
        self.shipments = 0
        self.failures = 0
        self.files = 0
        self.bytes = 0
        self.last_success: float | None = None
        self.last_error: str | None = None
        self.shipped_through: datetime | None = None

    def ship(self, *, final: bool = False, now: datetime | None = None) -> int:
        """Write the files whose rows grew; the number written. ``final``: the open minute too
        (this process is stopping and adds no more rows). Failures are counted, logged and
        raised as :class:`MonitorError` for the periodic runner."""
        # a stopping process waits a while for a shipment still uploading, not for ever
        if not self._lock.acquire(timeout=_FINAL_WAIT_S if final else -1):
            raise MonitorError("Shipping to the fleet failed: a shipment still runs.")
        try:
            try:
                written = self._ship(final, now)
            except Exception as exc:
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                raise MonitorError(f"Shipping to the fleet failed: {self.last_error}") from exc
            self.last_error = None  # before the count: who sees it grow sees the error gone
            self.last_success = time.time()
            self.shipments += 1
            return written
        finally:
            self._lock.release()

    def _ship(self, final: bool, now: datetime | None) -> int:
        now = now or datetime.now(UTC).replace(tzinfo=None)
        settle = timedelta(seconds=self.options.flush_interval + _SETTLE_S)
        closed = _minute(now) + timedelta(minutes=1) if final else _minute(now - settle)
        since = _hour(closed - timedelta(seconds=self.options.lookback))
        if self._storage is None:
            self._storage = FleetStorage.open(self.options.url, self._storage_options)
        written = 0
        cursor = self._cursors()
        try:
            for table in self._tables:
                written += self._ship_table(cursor, table, since, closed)
        finally:
            cursor.close()
        self._shipped = {key: v for key, v in self._shipped.items() if key[2] >= since}
        self.shipped_through = closed
        return written

    def _ship_table(self, cursor: Any, table: FleetTable, since: datetime, closed: datetime) -> int:
        written = 0
        grown = cursor.execute(table.growth_sql, {"start": since, "end": closed}).fetchall()
        for model, hour, measure in sorted(grown):
            key = (table.name, model, hour)
            end = min(hour + timedelta(hours=1), closed)
            whole = end == hour + timedelta(hours=1)
            # Rows only ever arrive; a smaller measure means retention took some, and the file
            # shipped before is the better account of that hour.
            before, was_whole = self._shipped.get(key, (-1, False))
            if measure < before or (measure == before and whole == was_whole):
                continue
            data = hour_file(cursor, table, model, hour, end, self.options.raw, closed=whole)
            if data is None:
                continue
            path = file_path(table.name, model, hour, self.replica)
            if len(data) >= _LOGGED_BYTES:
                logger.info("inferwatch: shipping %d bytes to %s", len(data), path)
            assert self._storage is not None
            self._storage.write(path, data)
            self._shipped[key] = (measure, whole)
            self.files += 1
            self.bytes += len(data)
            written += 1
        return written

    def health(self) -> dict[str, Any]:
        """The /health ``fleet`` object."""
        through = self.shipped_through
        return {
            "url": _shown(self.options.url),
            "replica": self.replica,
            "shipments": self.shipments,
            "failures": self.failures,
            "files": self.files,
            "bytes": self.bytes,
            "shipped_through": None if through is None else through.isoformat() + "Z",
            "last_success": None
            if self.last_success is None
            else datetime.fromtimestamp(self.last_success, UTC).isoformat().replace("+00:00", "Z"),
            "last_error": self.last_error,
        }

    def metrics(self) -> Iterator[Metric]:
        """The shipper's metric families."""
        yield CounterMetricFamily(
            "inferwatch_fleet_shipments", "Shipments to the fleet storage that completed.",
            value=self.shipments,
        )  # fmt: skip
        yield CounterMetricFamily(
            "inferwatch_fleet_failures", "Shipments to the fleet storage that failed.",
            value=self.failures,
        )  # fmt: skip
        yield CounterMetricFamily(
            "inferwatch_fleet_files", "Parquet files written to the fleet storage.",
            value=self.files,
        )  # fmt: skip
        yield CounterMetricFamily(
            "inferwatch_fleet_bytes", "Bytes written to the fleet storage.", value=self.bytes
        )
        if self.last_success is not None:
            yield GaugeMetricFamily(
                "inferwatch_fleet_last_success_timestamp_seconds",
                "When the last shipment to the fleet storage completed (Unix time).",
                value=self.last_success,
            )


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _shown(url: str | None) -> str | None:
    """The URL without any credentials written into it."""
    if url is None or "@" not in url.split("/", 3)[2 if "://" in url else 0]:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"
