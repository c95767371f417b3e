"""The DuckDB log store: opening the file, batch inserts, retention and the size cap.

One :class:`Store` per process. The writer thread inserts through the store's own cursor;
every reader asks :meth:`Store.cursor` for a cursor of its own and fetches results fully.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import weakref
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from ..errors import MonitorError
from ..serving.cgroup import usable_cpus
from .schema import FEATURES_VIEW, SCHEMA_VERSION, TABLES, UPGRADES, column_id_sql

__all__ = ["EXPORT_TABLES", "Store", "append_features"]

EXPORT_TABLES: dict[str, str] = {
    "requests": "ts",
    "features": "ts",
    "labels": "received_at",
    "efficiency": "ts",
    "resources": "ts",
    "drift_reports": "ts",
    "row_scores": "ts",
    "alerts": "ts",
    "alert_deliveries": "ts",
}
"""Each table a user can export, with the time column that ``since`` and ``until`` select on."""
_SERIES = ("efficiency", "resources")
_AGED = (*_SERIES, "drift_reports", "row_scores", "alerts", "alert_deliveries")
# by name: a batch without the later columns (``model``) leaves them NULL
_INSERT_REQUESTS = "INSERT INTO requests BY NAME SELECT * FROM request_batch"
# NumPy float arrays carry no NULL, so DuckDB reads NaN as NULL; a number (type code 0 in the
# column id) is never NULL otherwise, which lets the insert turn it back into NaN.
_INSERT_FEATURES = """
INSERT INTO feature_values
SELECT ts, request_id, row_index, column_id,
       CASE WHEN column_id // 2 % 4 = 0 AND num IS NULL THEN 'nan'::DOUBLE ELSE num END, str
FROM feature_batch
"""
_INSERT_COLUMNS = "INSERT INTO feature_columns BY NAME SELECT * FROM column_batch"
# Long-form rows staged by append_features: each (role, name, type) gets its column id, a new
# name the index after the highest one in use.
_STAGED_COLUMNS = f"""
INSERT INTO feature_columns (id, role, name, type)
WITH known AS (SELECT DISTINCT name, id // 8 AS idx FROM feature_columns WHERE model IS NULL),
     fresh AS (
         SELECT name, (SELECT coalesce(max(idx) + 1, 0) FROM known)
                      + row_number() OVER (ORDER BY name) - 1 AS idx
         FROM (SELECT DISTINCT name FROM iw_staged_features)
         WHERE name NOT IN (SELECT name FROM known)
     ),
     wanted AS (
         SELECT DISTINCT w.role, w.name, w.type, n.idx
         FROM iw_staged_features w
         JOIN (SELECT * FROM known UNION ALL SELECT * FROM fresh) n USING (name)
     )
SELECT {column_id_sql("idx", "role", "type")} AS id, role, name, type FROM wanted
WHERE id NOT IN (SELECT id FROM feature_columns)
"""  # noqa: S608 - fixed names and codes only
_STAGED_VALUES = """
INSERT INTO feature_values
SELECT s.ts, s.request_id, s.row_index, c.id, s.num, s.str
FROM iw_staged_features s JOIN feature_columns c USING (role, name, type)
WHERE c.model IS NULL
"""


class Store:
    """An open DuckDB log store file with the inferwatch tables in it."""

    def __init__(
        self,
        path: str,
        *,
        read_only: bool = False,
        memory_bytes: int = 256 * 2**20,
        threads: int | None = None,
    ) -> None:
        self.path = path
        config = {
            # DuckDB's cache would otherwise grow to 80% of the machine's memory beside the model.
            "memory_limit": f"{memory_bytes // 2**20}MiB",
            # DuckDB starts a thread per core of the machine; threads beyond what this process
            # may run on only switch with each other and with the model on the same cores.
            "threads": threads or usable_cpus(),
        }
        root: duckdb.DuckDBPyConnection | None = None
        created = False
        try:
            if not read_only:
                if os.path.dirname(path):
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                created = _clear_empty_file(path)
            root = duckdb.connect(path, read_only=read_only, config=config)
            self._root = root
            self._writer = root.cursor()
            if not read_only:
                _create_or_upgrade(self._writer)
                self._writer.execute(
                    "INSERT OR REPLACE INTO inferwatch_meta VALUES ('schema_version', ?)",
                    [str(SCHEMA_VERSION)],
                )
            elif _table_exists(self._writer, "features") and not _table_exists(
                self._writer, "feature_values"
            ):
                root.close()
                raise MonitorError(
                    f"The log store {path!r} has the first schema: open it once for writing "
                    "(start the monitor on it) to move it to schema 2."
                )
        except (duckdb.Error, OSError) as exc:
            # A connection left open would keep DuckDB's cached instance, and its file lock, for
            # the next attempt; a file this attempt created but could not finish (a full disk
            # cuts its header short) would never open again once space returns.
            if root is not None:
                with contextlib.suppress(duckdb.Error):
                    root.close()
            if created:
                _remove_unfinished(path)
            raise MonitorError(f"Cannot open the log store {path!r}: {_first_line(exc)}") from exc
        self._cursor_lock = threading.Lock()
        self._readers: weakref.WeakSet[duckdb.DuckDBPyConnection] = weakref.WeakSet()
        self._closed = False

    @property
    def writer(self) -> duckdb.DuckDBPyConnection:
        """The writing cursor; use it only on the writer thread (through ``StoreWriter.call``)."""
        return self._writer

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A cursor for one reader; close it when done."""
        with self._cursor_lock:
            if self._closed:
                raise MonitorError("The log store is closed.")
            cursor = self._root.cursor()
            self._readers.add(cursor)
            return cursor

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        """Run one read query on a fresh cursor and fetch every row."""
        cursor = self.cursor()
        try:
            return cursor.execute(sql, params or []).fetchall()
        finally:
            cursor.close()

    def insert(
        self,
        request_batch: dict[str, Any],
        feature_batch: dict[str, Any] | None,
        column_batch: dict[str, Any] | None = None,
        *,
        scores: dict[str, Any] | None = None,
        fold: Callable[[duckdb.DuckDBPyConnection, dict, dict | None], None] | None = None,
    ) -> None:
        """Write one batch of request rows, feature values, new feature columns and the input
        rows' outlier scores at once; ``fold(cursor, request_batch, feature_batch)`` then
        summarizes the batch in the same transaction (``summaries.fold``).

        Each batch is a dict of equal-length NumPy arrays in table column order; DuckDB scans
        them in place, which measured as fast as Arrow and needs no pyarrow.
        """
        cursor = self._writer
        cursor.execute("BEGIN TRANSACTION")
        try:
            cursor.register("request_batch", request_batch)
            cursor.execute(_INSERT_REQUESTS)
            if column_batch is not None:
                cursor.register("column_batch", column_batch)
                cursor.execute(_INSERT_COLUMNS)
            if feature_batch is not None:
                cursor.register("feature_batch", feature_batch)
                cursor.execute(_INSERT_FEATURES)
            if scores is not None:
                cursor.register("score_batch", scores)
                cursor.execute("INSERT INTO row_scores SELECT * FROM score_batch")
            if fold is not None:
                fold(cursor, request_batch, feature_batch)
            cursor.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                cursor.execute("ROLLBACK")
            raise
        finally:
            for name in ("request_batch", "column_batch", "feature_batch", "score_batch"):
                with contextlib.suppress(duckdb.Error):
                    cursor.unregister(name)

    def insert_series(self, table: str, batch: dict[str, Any]) -> None:
        """Append rows of a time-series table (``efficiency`` or ``resources``)."""
        if table not in _SERIES:
            raise MonitorError(f"No time-series table {table!r}.")
        cursor = self._writer
        cursor.register("series_batch", batch)
        try:
            cursor.execute(f"INSERT INTO {table} SELECT * FROM series_batch")  # noqa: S608
        finally:
            cursor.unregister("series_batch")

    def feature_columns(self) -> list[tuple[int, str, str, str, str | None]]:
        """Every (id, role, name, type, model) of ``feature_columns``: the writer's ids, and the
        names that count toward the distinct-name cap across restarts."""
        return self._writer.execute(
            "SELECT id, role, name, type, model FROM feature_columns"
        ).fetchall()

    def delete_older_than(self, cutoff: datetime) -> int:
        """Delete requests and feature rows logged before ``cutoff``; return the feature rows."""
        naive = _naive_utc(cutoff)
        cursor = self._writer
        deleted = cursor.execute("DELETE FROM feature_values WHERE ts < ?", [naive]).fetchone()
        cursor.execute("DELETE FROM requests WHERE ts < ?", [naive])
        for table in _AGED:
            cursor.execute(f"DELETE FROM {table} WHERE ts < ?", [naive])  # noqa: S608
        cursor.execute("DELETE FROM labels WHERE received_at < ?", [naive])
        return int(deleted[0]) if deleted else 0

    def data_bytes(self) -> int:
        """Bytes that hold data: used blocks plus the write-ahead log.

        DuckDB reuses freed blocks but never shrinks its file, so the file's size alone would
        never come down after an eviction.
        """
        row = self.query("SELECT used_blocks * block_size FROM pragma_database_size()")
        try:
            wal = os.path.getsize(self.path + ".wal")
        except OSError:
            wal = 0
        return int(row[0][0] or 0) + wal if row else wal

    def file_bytes(self) -> int:
        """Bytes on disk: the database file and its write-ahead log."""
        total = 0
        for path in (self.path, self.path + ".wal"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(path)
        return total

    def evict_oldest(self, share: float) -> int:
        """Delete the oldest ``share`` of logged time; return the feature rows deleted."""
        row = self._writer.execute("SELECT min(ts), max(ts) FROM requests").fetchone()
        if not row or row[0] is None:
            return 0
        oldest, newest = row
        span = max(newest - oldest, timedelta(microseconds=1))
        cutoff = oldest + span * share
        return self.delete_older_than(cutoff.replace(tzinfo=UTC))

    def export_parquet(
        self, table: str, path: str, since: datetime | None, until: datetime | None
    ) -> int:
        """Copy ``table``'s rows logged in [since, until) into a Parquet file; return the count.

        Labels are selected by when they were received."""
        column = EXPORT_TABLES.get(table)
        if column is None:
            raise MonitorError(
                f"No table {table!r} to export; choose one of {', '.join(EXPORT_TABLES)}."
            )
        start = since or datetime(1970, 1, 1, tzinfo=UTC)
        end = until or datetime(9999, 1, 1, tzinfo=UTC)
        # COPY takes no bound parameters: the bounds go through a temporary view of this cursor.
        cursor = self.cursor()
        try:
            cursor.execute(
                "CREATE TEMP TABLE export_bounds AS SELECT ?::TIMESTAMP AS lo, ?::TIMESTAMP AS hi",
                [_naive_utc(start), _naive_utc(end)],
            )
            quoted = path.replace("'", "''")
            row = cursor.execute(
                f"COPY (SELECT t.* FROM {table} t, export_bounds b "  # noqa: S608 - fixed names
                f"WHERE t.{column} >= b.lo AND t.{column} < b.hi ORDER BY t.{column}) "
                f"TO '{quoted}' (FORMAT parquet, COMPRESSION zstd)"
            ).fetchone()
        except duckdb.Error as exc:
            raise MonitorError(f"Exporting {table} failed: {_first_line(exc)}") from exc
        finally:
            cursor.close()
        return int(row[0]) if row else 0

    def checkpoint(self) -> None:
        self._writer.execute("CHECKPOINT")

    def close(self) -> None:
        with self._cursor_lock:
            if self._closed:
                return
            self._closed = True
            readers = list(self._readers)
        # A check still scanning at shutdown is stopped, not waited for: its report is moot.
        for reader in readers:
            with contextlib.suppress(duckdb.Error):
                reader.interrupt()
        try:
            self._writer.execute("CHECKPOINT")
        except duckdb.Error:
            pass  # a full or read-only disk: the write-ahead log keeps what was committed
        finally:
            with contextlib.suppress(duckdb.Error):
                self._writer.close()
            with contextlib.suppress(duckdb.Error):
                self._root.close()


def append_features(cursor: duckdb.DuckDBPyConnection, select: str, params: Any = None) -> None:
    """Store long-form rows: ``select`` gives (ts, request_id, row_index, role, name, type, num,
    str), as the ``features`` view reads; new (role, name, type) get their column ids.

    For rows made in SQL: moving a store of the first schema over, and test data.
    """
    cursor.execute(
        "CREATE OR REPLACE TEMP TABLE iw_staged_features (ts TIMESTAMP, request_id VARCHAR, "
        "row_index INTEGER, role VARCHAR, name VARCHAR, type VARCHAR, num DOUBLE, str VARCHAR)"
    )
    try:
        cursor.execute(f"INSERT INTO iw_staged_features {select}", params)
        cursor.execute(_STAGED_COLUMNS)
        cursor.execute(_STAGED_VALUES)
    finally:
        cursor.execute("DROP TABLE IF EXISTS iw_staged_features")


def _table_exists(cursor: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the store has a table (not a view) of this name."""
    row = cursor.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ?",
        [name],
    ).fetchone()
    return bool(row and row[0])


def _create_or_upgrade(cursor: duckdb.DuckDBPyConnection) -> None:
    """Create the tables; a store of schema 1 (``features`` a table) has its rows moved over."""
    old = _table_exists(cursor, "features")
    cursor.execute("BEGIN TRANSACTION")
    try:
        if old:
            cursor.execute("ALTER TABLE features RENAME TO features_schema_1")
        for statement in (*TABLES, *UPGRADES, FEATURES_VIEW):
            cursor.execute(statement)
        if old:
            append_features(cursor, "SELECT * FROM features_schema_1 ORDER BY ts")
            cursor.execute("DROP TABLE features_schema_1")
        cursor.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        raise


_HEADER_BYTES = 3 * 4096  # DuckDB's file header and its two database headers


def _clear_empty_file(path: str) -> bool:
    """True when opening ``path`` creates the file; an empty file left by a crash is removed.

    An empty file holds nothing, but DuckDB refuses it as "not a valid DuckDB database file".
    """
    try:
        info = os.stat(path)
    except OSError:
        return True
    if not stat.S_ISREG(info.st_mode) or info.st_size > 0:
        return False
    with contextlib.suppress(OSError):
        os.remove(path)
    return True


def _remove_unfinished(path: str) -> None:
    """Remove a file that the failed open created, if it did not get a whole header."""
    with contextlib.suppress(OSError):
        info = os.stat(path)
        if stat.S_ISREG(info.st_mode) and info.st_size < _HEADER_BYTES:
            os.remove(path)
            with contextlib.suppress(OSError):
                os.remove(path + ".wal")


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__).rstrip(".") + "."
