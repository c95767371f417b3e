"""Reading the fleet: every replica's summaries of a window, merged into one window's rows.

The window's files are found by partition (model, date, hour), one listing per hour, and read
by DuckDB's Parquet reader: local files where they are, files of an object store after fetching
them all at once into a temporary folder (every reader measured makes one GET per file; this
one sends them all together, docs/fleet.md). Summary rows of the baseline's digest whose whole
step lies in the window are merged; replicas whose rows are of another baseline are named.
"""

# Every SQL text below is built from this module's constants; values are bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb

from ..errors import MonitorError
from .layout import FleetStorage, decode_value, encode_value

__all__ = ["FleetWindow", "fleet_files", "fleet_window", "window_hours"]

_HIVE_TYPES = "{'model': VARCHAR, 'date': DATE, 'hour': INTEGER, 'replica': VARCHAR}"
# the partition columns (the replica's name) are read only when a second pass needs them
_HIVE = f", hive_partitioning = true, hive_types = {_HIVE_TYPES}"
_NO_HIVE = ", hive_partitioning = false"
_HOUR = timedelta(hours=1)
_WINDOW = "minute >= $start AND minute + to_seconds(step_s) <= $end"
_MERGE = (
    "sum(n)::BIGINT AS n, sum(total) AS total, sum(squares) AS squares, "
    "min(low) AS low, max(high) AS high"
)


@dataclass
class FleetWindow:
    """The merged summary rows of a window of the fleet, and whose rows they are."""

    start: datetime
    end: datetime
    merged: list[tuple[Any, ...]]  # (role, name, what, key, n, total, squares, low, high)
    replicas: list[str] = field(default_factory=list)  # replicas whose rows were merged
    other_baselines: list[str] = field(default_factory=list)  # replicas summarizing others
    files: int = 0
    # each replica's own merged rows, when asked for
    by_replica: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)


def window_hours(start: datetime, end: datetime) -> list[datetime]:
    """The hours whose partitions hold rows of [start, end)."""
    hour = start.replace(minute=0, second=0, microsecond=0)
    hours = []
    while hour < end:
        hours.append(hour)
        hour += timedelta(hours=1)
    return hours


def fleet_files(
    storage: FleetStorage, model: str, start: datetime, end: datetime, table: str = "summaries"
) -> list[str]:
    """Every file of ``table`` for ``model`` (``''``: every request) in the window's hours."""
    files: list[str] = []
    for hour in window_hours(start, end):
        prefix = f"{table}/model={encode_value(model)}/date={hour:%Y-%m-%d}/hour={hour:%H}"
        files.extend(_listed(storage, prefix, f"{table}-{hour:%Y%m%dT%H}.parquet"))
    return files


def _listed(storage: FleetStorage, prefix: str, name: str) -> Iterator[str]:
    """The hour's files: in a folder, each replica's one file of that name (one listing of the
    hour, not one per replica); in an object store, one listing of the hour's prefix."""
    if storage.local:
        folder = storage.path(prefix)
        try:
            replicas = sorted(os.listdir(folder))
        except FileNotFoundError:
            return
        for replica in replicas:
            path = os.path.join(folder, replica, name)
            if replica.startswith("replica=") and os.path.isfile(path):
                yield path
        return
    try:
        found = storage.fs.find(storage.path(prefix))
    except FileNotFoundError:
        return
    yield from sorted(path for path in found if path.rsplit("/", 1)[-1] == name)


def fleet_window(
    storage: FleetStorage,
    digest: str,
    start: datetime,
    end: datetime,
    *,
    model: str = "",
    reader: str | None = None,
    by_replica: bool = False,
) -> FleetWindow:
    """The fleet's summary rows of ``model`` and baseline ``digest`` in [start, end), merged.

    A row counts when its whole step lies in the window: closed hours ship as hour totals, so
    the window starts on the hour that holds ``start`` (:func:`window_hours`) and rows are
    whole minutes up to ``end``. ``reader``: ``duckdb`` (DuckDB's Parquet reader, through
    fsspec for object stores), ``download`` (the files copied to a temporary folder at once,
    then DuckDB) or ``arrow`` (a pyarrow dataset); by default ``duckdb`` for local folders and
    ``download`` for object stores, the fastest measured (docs/fleet.md). ``by_replica``: each
    replica's rows merged apart too (:attr:`FleetWindow.by_replica`).
    """
    start = start.replace(minute=0, second=0, microsecond=0)
    files = fleet_files(storage, model, start, end)
    if not files:
        return FleetWindow(start, end, [])
    reader = reader or ("duckdb" if storage.local else "download")
    cursor = duckdb.connect()
    try:
        with tempfile.TemporaryDirectory(prefix="inferwatch-fleet-") as copies:
            params: dict[str, Any] = {"digest": digest, "start": start, "end": end}
            if reader == "arrow":
                cursor.register("fleet_files", _arrow_dataset(storage, files))
                rows = f"SELECT * FROM fleet_files WHERE {_WINDOW}"
                return _merge(cursor, lambda hive: rows, params, start, end, files, by_replica)
            read = files
            if reader == "download":
                read = _downloaded(storage, files, copies)
            elif not storage.local:  # DuckDB through the fsspec filesystem
                cursor.register_filesystem(storage.fs)
                read = [storage.uri(f[len(storage.root) + 1 :]) for f in files]
            # Rows of an hour inside the window are inside it: only the edge hours' rows are
            # compared with its ends, which saves about a sixth of the scan.
            inner = {f"{h:%Y%m%dT%H}" for h in window_hours(start, end) if h + _HOUR <= end}
            whole = [copy for path, copy in zip(files, read, strict=True) if _hour(path) in inner]
            edge = [
                copy for path, copy in zip(files, read, strict=True) if _hour(path) not in inner
            ]
            parts = []
            for name, chosen, where in (("whole", whole, ""), ("edge", edge, f" WHERE {_WINDOW}")):
                if chosen:
                    params[name] = chosen
                    parts.append(f"SELECT * FROM read_parquet(${name}{{hive}}){where}")
            sql = " UNION ALL ".join(parts)
            return _merge(cursor, lambda hive: sql.format(hive=_HIVE if hive else _NO_HIVE),
                          params, start, end, files, by_replica)  # fmt: skip
    except (duckdb.Error, OSError) as exc:
        raise MonitorError(f"Cannot read the fleet at {storage.url!r}: {exc}") from exc
    finally:
        cursor.close()


def _downloaded(storage: FleetStorage, files: list[str], folder: str) -> list[str]:
    """Local copies of ``files`` under ``folder`` in the same layout, fetched at once (s3fs
    runs the GETs concurrently)."""
    copies = [os.path.join(folder, path[len(storage.root) + 1 :]) for path in files]
    for directory in {os.path.dirname(copy) for copy in copies}:
        os.makedirs(directory, exist_ok=True)
    storage.fs.get(files, copies)
    return copies


def _merge(
    cursor: duckdb.DuckDBPyConnection,
    source: Callable[[bool], str],
    params: dict[str, Any],
    start: datetime,
    end: datetime,
    files: list[str],
    by_replica: bool = False,
) -> FleetWindow:
    """Merge the rows of ``source(hive)`` (a SELECT of the window's rows, with the partition
    columns when ``hive``)."""
    params = {k: v for k, v in params.items() if k == "digest" or f"${k}" in source(False)}
    cursor.execute(
        f"""CREATE TEMP TABLE fleet_window AS
            SELECT baseline = $digest AS ours, role, name, what, key, {_MERGE}
            FROM ({source(False)}) GROUP BY ALL""",
        params,
    )
    merged = cursor.execute(
        "SELECT role, name, what, key, n, total, squares, low, high FROM fleet_window WHERE ours"
    ).fetchall()
    replicas = sorted({_replica(path) for path in files})
    others: list[str] = []
    if cursor.execute("SELECT count(*) FROM fleet_window WHERE NOT ours").fetchall()[0][0]:
        # a fleet amid a change of baseline: one more pass says which replicas are whose
        found = cursor.execute(
            f"SELECT replica, bool_or(baseline = $digest) FROM ({source(True)}) GROUP BY 1",
            params,
        ).fetchall()
        ours = {decode_value(r) or "" for r, mine in found if mine}
        others = sorted({decode_value(r) or "" for r, _ in found} - ours)
        replicas = sorted(ours)
    window = FleetWindow(start, end, merged, replicas, others, len(files))
    if by_replica:
        rows = cursor.execute(
            f"""SELECT replica, role, name, what, key, {_MERGE} FROM ({source(True)})
                WHERE baseline = $digest GROUP BY ALL""",
            params,
        ).fetchall()
        for replica, *row in rows:
            window.by_replica.setdefault(decode_value(replica) or "", []).append(tuple(row))
    return window


def _hour(path: str) -> str:
    """The hour of a file, from its name (``summaries-YYYYMMDDTHH.parquet``)."""
    return path[-len("YYYYMMDDTHH.parquet") : -len(".parquet")]


def _replica(path: str) -> str:
    return decode_value(path.replace("\\", "/").rsplit("/", 2)[-2].split("=", 1)[1]) or ""


def _arrow_dataset(storage: FleetStorage, files: list[str]) -> Any:
    """The files as one pyarrow dataset, partition columns typed as DuckDB's reader types them."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    partitioning = ds.partitioning(
        pa.schema(
            [
                ("model", pa.string()),
                ("date", pa.date32()),
                ("hour", pa.int32()),
                ("replica", pa.string()),
            ]
        ),
        flavor="hive",
    )
    return ds.dataset(
        files,
        filesystem=storage.fs,
        format="parquet",
        partitioning=partitioning,
        partition_base_dir=storage.path("summaries"),
    )
