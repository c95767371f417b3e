"""Reading the fleet: every replica's summaries of a window, merged into one window's rows.

The window's files are found by partition (model, date, hour), listed per hour, and read by
DuckDB with ``hive_partitioning``: local files with DuckDB's own reader, object stores through
pyarrow (which measured faster than DuckDB over a registered fsspec filesystem; see
docs/fleet.md). Summary rows of the baseline's digest whose whole step lies in the window are
merged by :data:`MERGE_ROWS`; rows of another baseline are counted, not merged.
"""

# Every SQL text below is built from this module's constants; values are bound parameters.
# ruff: noqa: S608

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import duckdb

from ._errors import MonitorError
from ._fleet_layout import FleetStorage, encode_value

__all__ = ["FleetWindow", "fleet_files", "fleet_window", "window_hours"]

_HIVE_TYPES = "{'model': VARCHAR, 'date': DATE, 'hour': INTEGER, 'replica': VARCHAR}"
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
        files.extend(_listed(storage, prefix))
    return files


def _listed(storage: FleetStorage, prefix: str) -> Iterator[str]:
    if storage.local:
        folder = storage.path(prefix)
        try:
            replicas = os.listdir(folder)
        except FileNotFoundError:
            return
        for replica in sorted(replicas):
            if not replica.startswith("replica="):
                continue
            inner = os.path.join(folder, replica)
            with os.scandir(inner) as entries:
                yield from sorted(
                    e.path for e in entries if e.name.endswith(".parquet") and e.name[0] not in "._"
                )
        return
    try:
        found = storage.fs.find(storage.path(prefix))
    except FileNotFoundError:
        return
    for path in sorted(found):
        name = path.rsplit("/", 1)[-1]
        if name.endswith(".parquet") and name[0] not in "._":
            yield path


def fleet_window(
    storage: FleetStorage,
    digest: str,
    start: datetime,
    end: datetime,
    *,
    model: str = "",
    reader: str | None = None,
) -> FleetWindow:
    """The fleet's summary rows of ``model`` and baseline ``digest`` in [start, end), merged.

    A row counts when its whole step lies in the window: closed hours ship as hour totals, so
    the window starts on the hour that holds ``start`` (:func:`window_hours`) and rows are
    whole minutes up to ``end``. ``reader``: ``duckdb`` or ``arrow`` (default: DuckDB for
    local files, pyarrow for object stores).
    """
    start = start.replace(minute=0, second=0, microsecond=0)
    files = fleet_files(storage, model, start, end)
    if not files:
        return FleetWindow(start, end, [])
    reader = reader or ("duckdb" if storage.local else "arrow")
    cursor = duckdb.connect()
    try:
        if reader == "duckdb":
            if not storage.local:
                cursor.register_filesystem(storage.fs)
                files = [storage.uri(f[len(storage.root) + 1 :]) for f in files]
            source = (
                f"read_parquet($files, hive_partitioning = true, hive_types = {_HIVE_TYPES})"
            )
            params: dict[str, Any] = {"files": files}
        else:
            cursor.register("fleet_files", _arrow_dataset(storage, files))
            source, params = "fleet_files", {}
        params |= {"digest": digest, "start": start, "end": end}
        return _merge(cursor, source, params, start, end, len(files))
    except (duckdb.Error, OSError) as exc:
        raise MonitorError(f"Cannot read the fleet at {storage.url!r}: {exc}") from exc
    finally:
        cursor.close()


def _merge(
    cursor: duckdb.DuckDBPyConnection,
    source: str,
    params: dict[str, Any],
    start: datetime,
    end: datetime,
    files: int,
) -> FleetWindow:
    cursor.execute(
        f"""CREATE TEMP TABLE fleet_window AS
            SELECT replica, baseline = $digest AS ours, role, name, what, key, {_MERGE}
            FROM {source}
            WHERE minute >= $start AND minute + to_seconds(step_s) <= $end
            GROUP BY ALL""",
        params,
    )
    merged = cursor.execute(
        f"SELECT role, name, what, key, {_MERGE} FROM fleet_window WHERE ours GROUP BY ALL"
    ).fetchall()
    replicas = cursor.execute(
        "SELECT replica, bool_or(ours) FROM fleet_window GROUP BY replica ORDER BY replica"
    ).fetchall()
    return FleetWindow(
        start,
        end,
        merged,
        replicas=[r for r, ours in replicas if ours],
        other_baselines=[r for r, ours in replicas if not ours],
        files=files,
    )


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
