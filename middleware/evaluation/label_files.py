"""Ground truth from files: ``inferwatch labels import`` of CSV, Parquet or JSON lines.

DuckDB reads, checks and writes the file without a Python loop, in one transaction; the first bad
row is named and nothing is written. A CSV's labels are typed as the baseline types a CSV.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from datetime import datetime

import duckdb

from ..stats.summary_sql import NUMBER_TEXT
from ..store.database import Store
from .labels import (
    _MATCHED,
    _MAX_INDEX,
    _UPSERT,
    MAX_LABEL_CHARS,
    MAX_REQUEST_ID_CHARS,
    LabelError,
    _count,
    _first_line,
    _received,
    _transaction,
)
from .tallies import fold_label_tallies

__all__ = ["import_label_file"]


def import_label_file(
    store: Store,
    path: str,
    *,
    progress: Callable[[str], None] | None = None,
    received_at: datetime | None = None,
) -> dict[str, int]:
    """Import labels from a CSV, Parquet or JSON lines file, inside DuckDB, in one transaction.

    Columns: ``request_id``, ``label``, optional ``index`` (or ``row_index``, default 0) and
    ``timestamp`` (ISO-8601 or epoch seconds); any other column is an error. A CSV's labels
    are strings, as a JSON client sends them, unless all are numbers, or all are boolean words
    answering responses that hold booleans. A bad file raises :class:`LabelError` naming the
    first bad row, and nothing is written. Returns ``accepted``, ``matched`` and ``unmatched``.
    Uses the writer's cursor: run it on the writer thread, or on a store no engine has open.
    """
    say = progress or (lambda _message: None)
    name = os.path.basename(path)
    cursor = store.writer
    try:
        rows = _stage(cursor, path, name)
        say(f"read {rows:,} rows from {name}")
        with _transaction(cursor):
            fold_label_tallies(cursor, "iw_labels", -1)
            cursor.execute(_UPSERT.format(source="iw_labels"), [_received(received_at)])
            fold_label_tallies(cursor, "iw_labels", 1)
            matched = _count(cursor, _MATCHED.format(source="iw_labels"))
        accepted = _count(cursor, "SELECT count(*) FROM iw_labels")
        say(f"wrote {accepted:,} labels, {matched:,} of them for captured predictions")
    except duckdb.Error as exc:
        raise LabelError(f"Cannot import labels from {name}: {_first_line(exc)}") from exc
    finally:
        for table in ("iw_label_raw", "iw_label_rows", "iw_labels"):
            with contextlib.suppress(duckdb.Error):
                cursor.execute(f"DROP TABLE IF EXISTS temp.{table}")
    return {"accepted": accepted, "matched": matched, "unmatched": accepted - matched}


_CSV = "read_csv(?, header = true{types})"
_READERS = {".csv": _CSV, ".tsv": _CSV, ".txt": _CSV, ".parquet": "read_parquet(?)"}
_READERS |= dict.fromkeys((".jsonl", ".ndjson", ".json"), "read_json_auto(?)")
_NUMBER = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "FLOAT", "DOUBLE", "DECIMAL")
_NUMBER += tuple("U" + kind for kind in _NUMBER[:5])
_FILE_COLUMNS = frozenset({"request_id", "index", "row_index", "label", "timestamp"})
_TRUE_WORDS = "'true', 't', 'yes', 'y'"
_BOOLEAN_WORDS = _TRUE_WORDS + ", 'false', 'f', 'no', 'n'"
_INDEX = 'CASE WHEN "{0}" IS NULL THEN 0 ELSE try_cast("{0}" AS DOUBLE) END'  # blank: 0
_OFFSET = r"[T ]\d\d:\d\d.*(Z|[+-]\d\d(:?\d\d)?)$"
# The first bad row's problem, checked in this order; the messages are SQL string literals.
_PROBLEMS = (
    ("request_id IS NULL OR request_id = ''", "'request_id' must be a non-empty string"),
    (
        f"length(request_id) > {MAX_REQUEST_ID_CHARS}",
        f"'request_id' is longer than {MAX_REQUEST_ID_CHARS} characters",
    ),
    (
        f"idx IS NULL OR idx <> floor(idx) OR idx < 0 OR idx > {_MAX_INDEX}",
        f"'index' must be a whole number from 0 to {_MAX_INDEX}",
    ),
    ("type IS NULL", "'label' must be a number, a string or a boolean"),
    (f"length(str) > {MAX_LABEL_CHARS}", f"'label' is longer than {MAX_LABEL_CHARS:,} characters"),
    ("has_ts AND label_ts IS NULL", "'timestamp' must be an ISO-8601 time or epoch seconds"),
)
_CASES = " ".join(
    f"WHEN {test} THEN '{text.replace(chr(39), chr(39) * 2)}'" for test, text in _PROBLEMS
)
_FIRST_PROBLEM = (
    f"SELECT pos + 1, CASE {_CASES} END AS problem FROM iw_label_rows "  # noqa: S608
    "WHERE problem IS NOT NULL ORDER BY pos LIMIT 1"
)


def _stage(cursor: duckdb.DuckDBPyConnection, path: str, name: str) -> int:
    """Read ``path`` into temp table ``iw_labels`` (label rows, last per key); return rows read."""
    stem = path.removesuffix(".gz")
    reader = _READERS.get(os.path.splitext(stem)[1].lower())
    if reader is None:
        raise LabelError(f"{name}: not a label file; use .csv, .parquet or .jsonl.")
    if not os.path.isfile(path):
        raise LabelError(f"{name}: no such file.")
    try:
        described = cursor.execute(f"DESCRIBE FROM {reader.format(types='')}", [path])
        columns = {str(row[0]): str(row[1]).upper() for row in described.fetchall()}
    except duckdb.Error as exc:
        raise LabelError(f"Cannot read {name}: {_first_line(exc)}") from exc
    for needed in ("request_id", "label"):
        if needed not in columns:
            raise LabelError(
                f"{name} has no {needed!r} column; it needs request_id and label, and may have "
                "index and timestamp."
            )
    unknown = sorted(set(columns) - _FILE_COLUMNS)
    if unknown:
        raise LabelError(
            f"{name}: unknown column {unknown[0]!r} (expected request_id, index, label, timestamp)."
        )
    index = "index" if "index" in columns else "row_index" if "row_index" in columns else None
    stamp = _timestamp_sql(columns.get("timestamp"), name)
    # A CSV id like 00123 must stay a string, not become the number 123; a CSV label is text
    # until _csv_label_kind says what the served predictions make of it.
    text_label = reader is _CSV
    types = (
        "{'request_id': 'VARCHAR', 'label': 'VARCHAR'}"
        if text_label
        else "{'request_id': 'VARCHAR'}"
    )
    typed = reader.format(types=f", types = {types}")
    cursor.execute(f"CREATE OR REPLACE TEMP TABLE iw_label_raw AS FROM {typed}", [path])
    label_kind = _csv_label_kind(cursor) if text_label else columns["label"]
    kind, num, text = _label_columns(label_kind, name)
    cursor.execute(f"""
        CREATE OR REPLACE TEMP TABLE iw_label_rows AS
        SELECT rowid AS pos, request_id::VARCHAR AS request_id,
               {"0" if index is None else _INDEX.format(index)} AS idx,
               {kind} AS type, {num} AS num, {text} AS str, {stamp} AS label_ts,
               {'"timestamp" IS NOT NULL' if "timestamp" in columns else "false"} AS has_ts
        FROM iw_label_raw""")  # noqa: S608 - fixed names and expressions built above
    bad = next(iter(cursor.execute(_FIRST_PROBLEM).fetchall()), None)
    if bad:
        raise LabelError(f"{name} row {bad[0]}: {bad[1]}.")
    cursor.execute("""
        CREATE OR REPLACE TEMP TABLE iw_labels AS
        SELECT request_id, idx::INTEGER AS row_index, type, num, str, label_ts FROM iw_label_rows
        QUALIFY row_number() OVER (PARTITION BY request_id, idx ORDER BY pos DESC) = 1""")
    return _count(cursor, "SELECT count(*) FROM iw_label_rows")


def _csv_label_kind(cursor: duckdb.DuckDBPyConnection) -> str:
    """The type of a CSV's text labels as the served predictions have it: numbers when every
    label is written as a number (07 is text), booleans when every label is a boolean word and
    the labelled requests' responses hold booleans, strings otherwise."""
    numbers, words = cursor.execute(
        f"SELECT bool_and(regexp_full_match(trim(label), '{NUMBER_TEXT}')), "  # noqa: S608
        f"bool_and(lower(trim(label)) IN ({_BOOLEAN_WORDS})) FROM iw_label_raw"
    ).fetchone() or (None, None)
    if numbers:
        return "TEXT_NUMBER"
    if words:
        served = cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM features WHERE role = 'output' AND type = 'boolean' "
            "AND request_id IN (SELECT request_id::VARCHAR FROM iw_label_raw))"
        ).fetchone()
        if served and served[0]:
            return "TEXT_BOOLEAN"
    return "VARCHAR"


def _label_columns(kind: str, name: str) -> tuple[str, str, str]:
    """SQL for (type, num, str) of the label column, by the column's DuckDB type."""
    present = "CASE WHEN label IS NOT NULL THEN '{}' END"
    if kind == "TEXT_NUMBER":
        return present.format("number"), "TRY_CAST(trim(label) AS DOUBLE)", "NULL"
    if kind == "TEXT_BOOLEAN":
        truth = f"(lower(trim(label)) IN ({_TRUE_WORDS}))::DOUBLE"
        return present.format("boolean"), truth, "NULL"
    if kind == "BOOLEAN":
        return present.format("boolean"), "label::DOUBLE", "NULL"
    if kind.startswith(_NUMBER):
        return present.format("number"), "label::DOUBLE", "NULL"
    if kind == "VARCHAR":
        return present.format("string"), "NULL", "label"
    if kind == "JSON":  # JSON lines with mixed label types: each value keeps its own
        json = "json_type(label)"
        return (
            f"CASE {json} WHEN 'BOOLEAN' THEN 'boolean' WHEN 'VARCHAR' THEN 'string' "
            "WHEN 'BIGINT' THEN 'number' WHEN 'UBIGINT' THEN 'number' "
            "WHEN 'DOUBLE' THEN 'number' END",
            f"CASE {json} WHEN 'BOOLEAN' THEN (label::VARCHAR = 'true')::DOUBLE "
            "WHEN 'VARCHAR' THEN NULL ELSE try_cast(label::VARCHAR AS DOUBLE) END",
            f"CASE WHEN {json} = 'VARCHAR' THEN label ->> '$' END",
        )
    raise LabelError(
        f"{name}: column 'label' is {kind}; it must hold numbers, strings or booleans."
    )


def _timestamp_sql(kind: str | None, name: str) -> str:
    """SQL turning the timestamp column into naive UTC; NULL where a value cannot be read."""
    if kind is None:
        return "NULL::TIMESTAMP"
    column = '"timestamp"'
    epoch = "CASE WHEN {v} >= 0 AND {v} < 1e11 THEN timezone('UTC', to_timestamp({v})) END"
    if kind.startswith("TIMESTAMP WITH") or kind == "TIMESTAMPTZ":
        return f"timezone('UTC', {column})"
    if kind.startswith(("TIMESTAMP", "DATE")):
        return f"{column}::TIMESTAMP"
    if kind.startswith(_NUMBER):
        return epoch.format(v=f"{column}::DOUBLE")
    if kind not in ("VARCHAR", "JSON"):
        raise LabelError(f"{name}: column 'timestamp' is {kind}; use ISO-8601 or epoch seconds.")
    text = f"{column}::VARCHAR" if kind == "VARCHAR" else f"({column} ->> '$')"
    # An explicit offset is honoured; a time without one is UTC, whatever DuckDB's TimeZone.
    return (
        f"CASE WHEN regexp_matches({text}, '{_OFFSET}') "
        f"THEN timezone('UTC', try_cast({text} AS TIMESTAMPTZ)) "
        f"ELSE coalesce(try_cast({text} AS TIMESTAMP), "
        f"{epoch.format(v=f'try_cast({text} AS DOUBLE)')}) END"
    )
