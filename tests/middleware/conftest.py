"""What the middleware's tests share: log stores in the long layout, written as the writer
writes them, and Parquet files written by DuckDB (the drift and baseline tests read both)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np

from inferwatch.middleware.store.database import append_features
from inferwatch.middleware.store.schema import STATEMENTS

T0 = datetime(2026, 3, 1)


def open_store(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    for statement in STATEMENTS:
        con.execute(statement)
    return con


def _typed(values: Sequence[Any]) -> tuple[list, list, list]:
    types, nums, strs = [], [], []
    for v in values:
        if v is None:
            types.append(None)  # absent: no row at all
            nums.append(None)
            strs.append(None)
        elif isinstance(v, bool | np.bool_):
            types.append("boolean")
            nums.append(1.0 if v else 0.0)
            strs.append(None)
        elif isinstance(v, int | float | np.integer | np.floating):
            types.append("number")
            nums.append(float(v))
            strs.append(None)
        else:
            types.append("string")
            nums.append(None)
            strs.append(str(v))
    return types, nums, strs


def log_rows(
    con: duckdb.DuckDBPyConnection,
    columns: Mapping[str, Sequence[Any]],
    *,
    start: datetime = T0,
    step_ms: float = 1.0,
    role: str = "input",
    prefix: str = "r",
    statuses: Sequence[str] | None = None,
) -> datetime:
    """Log one single-row request per row, role ``role``; returns the time after the last."""
    n = len(next(iter(columns.values())))
    span = {"start": start, "step": step_ms * 1000, "prefix": prefix, "role": role, "n": n}
    for name, values in columns.items():
        kind = values.dtype.kind if isinstance(values, np.ndarray) else "O"
        if kind in "fiub":
            append_features(
                con,
                "SELECT $start + to_microseconds(CAST(i * $step AS BIGINT)), "
                "$prefix || i, 0, $role, $name, $type, v, NULL "
                "FROM (SELECT unnest($v::DOUBLE[]) AS v, unnest(range($n)) AS i)",
                span
                | {"name": name, "v": values.astype(float).tolist()}
                | {"type": "boolean" if kind == "b" else "number"},
            )
            continue
        if kind in "US":
            append_features(
                con,
                "SELECT $start + to_microseconds(CAST(i * $step AS BIGINT)), "
                "$prefix || i, 0, $role, $name, 'string', NULL, v "
                "FROM (SELECT unnest($v::VARCHAR[]) AS v, unnest(range($n)) AS i)",
                span | {"name": name, "v": values.tolist()},
            )
            continue
        types, nums, strs = _typed(list(values))
        append_features(
            con,
            "SELECT $start + to_microseconds(CAST(i * $step AS BIGINT)), "
            "$prefix || i, 0, $role, $name, t, v, s FROM (SELECT unnest($t::VARCHAR[]) AS t, "
            "unnest($v::DOUBLE[]) AS v, unnest($s::VARCHAR[]) AS s, unnest(range($n)) AS i) "
            "WHERE t IS NOT NULL",
            span | {"name": name, "t": types, "v": nums, "s": strs},
        )
    if role == "input":
        con.execute(
            "INSERT INTO requests (ts, request_id, method, route, status, input_status, "
            "input_rows) SELECT $start + to_microseconds(CAST(i * $step AS BIGINT)), "
            "$prefix || i, 'POST', '/predict', 200, coalesce(s, 'ok'), 1 "
            "FROM (SELECT unnest(range($n)) AS i, unnest($s::VARCHAR[]) AS s)",
            {k: span[k] for k in ("start", "step", "prefix", "n")}
            | {"s": list(statuses) if statuses is not None else [None] * n},
        )
    return start + timedelta(milliseconds=n * step_ms)


def write_parquet(path: Path, columns: Mapping[str, Sequence[Any]]) -> str:
    """A Parquet file of ``columns`` (numpy arrays or lists), written by DuckDB."""
    con = duckdb.connect()
    parts, params = [], {}
    for i, (name, values) in enumerate(columns.items()):
        values = np.asarray(values) if not isinstance(values, np.ndarray) else values
        kind = values.dtype.kind
        if kind == "O":
            first = next((v for v in values if v is not None), "")
            kind = "f" if isinstance(first, float) else "U"
        sql_type = {"f": "DOUBLE", "i": "BIGINT", "u": "BIGINT", "b": "BOOLEAN"}.get(
            kind, "VARCHAR"
        )
        data = values.tolist()
        if sql_type == "VARCHAR":
            data = [None if v is None else str(v) for v in data]
        params[f"c{i}"] = data
        quoted = '"' + name.replace('"', '""') + '"'
        parts.append(f"unnest($c{i}::{sql_type}[]) AS {quoted}")
    con.execute(f"COPY (SELECT {', '.join(parts)}) TO '{path}' (FORMAT parquet)", params)
    con.close()
    return str(path)
