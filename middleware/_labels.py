"""Ground truth: parsing POST /labels bodies, writing labels, importing label files.

Labels live in the ``labels`` table, one per (request_id, row_index): a later label for the same
row replaces the earlier one, so sending a batch twice changes nothing. They are joined with the
captured predictions only when evaluated (``_evaluation``), so a label may arrive before, long
after, or without its prediction. Writes run on the writer thread (``StoreWriter.call``).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import orjson

from ._errors import MonitorError
from ._store import Store

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_ITEMS",
    "MAX_LABEL_CHARS",
    "MAX_REQUEST_ID_CHARS",
    "Label",
    "LabelError",
    "import_label_file",
    "parse_labels",
    "write_labels",
]

MAX_ITEMS = 100_000
"""Labels accepted in one POST /labels body; larger sets go through ``labels import``."""
MAX_BODY_BYTES = 32 * 2**20
"""Largest POST /labels body worth reading: 100,000 labels with timestamps take about 11 MB."""
MAX_REQUEST_ID_CHARS = 128
"""Longest request id: the longest ``X-Request-ID`` the capture keeps."""
MAX_LABEL_CHARS = 1_024
"""Longest string label: captured string predictions are cut at this length."""

_MAX_INDEX = 2**31 - 1
_MAX_EPOCH_S = 1e11  # year 5138: anything larger is milliseconds or nanoseconds by mistake
_KEYS = frozenset({"request_id", "index", "label", "timestamp"})

# Both paths stage deduplicated rows as (request_id, row_index, type, num, str, label_ts);
# NumPy float arrays have no NULL, so DuckDB reads the NaN of non-numbers as NULL, as intended.
_UPSERT = "INSERT OR REPLACE INTO labels SELECT *, ?::TIMESTAMP FROM {source}"
_MATCHED = """
SELECT count(*) FROM {source} b
WHERE EXISTS (SELECT 1 FROM features f WHERE f.role = 'output'
              AND f.request_id = b.request_id AND f.row_index = b.row_index)
"""


class LabelError(MonitorError):
    """A label body or file that cannot be accepted, named in one sentence (HTTP 400)."""


@dataclass(frozen=True, slots=True)
class Label:
    """One ground-truth value for row ``index`` of request ``request_id``.

    ``timestamp`` is when the truth was observed (naive UTC), if the sender said so.
    """

    request_id: str
    index: int
    value: float | str | bool
    timestamp: datetime | None = None


def parse_labels(body: bytes) -> list[Label]:
    """Parse a POST /labels body: a JSON array of label objects, or one object.

    Raises :class:`LabelError` naming the first bad item; nothing is written by parsing.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise LabelError(f"The body is not valid JSON: {str(exc).rstrip('.')}.") from exc
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise LabelError("The body must be a JSON array of label objects.")
    if len(data) > MAX_ITEMS:
        raise LabelError(
            f"The body has {len(data):,} labels; at most {MAX_ITEMS:,} are accepted per request "
            "(use `inferwatch labels import` for more)."
        )
    return [_item(position, item) for position, item in enumerate(data)]


def _item(position: int, item: Any) -> Label:
    def bad(text: str) -> LabelError:
        return LabelError(f"item {position}: {text}.")

    if not isinstance(item, dict):
        raise bad("must be an object with 'request_id' and 'label'")
    unknown = sorted(set(item) - _KEYS)
    if unknown:
        raise bad(f"unknown key {unknown[0]!r} (expected request_id, index, label, timestamp)")
    request_id = item.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise bad("'request_id' must be a non-empty string")
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise bad(f"'request_id' is longer than {MAX_REQUEST_ID_CHARS} characters")
    index = item.get("index", 0)
    if isinstance(index, float) and index.is_integer():
        index = int(index)
    if type(index) is not int or not 0 <= index <= _MAX_INDEX:
        raise bad(f"'index' must be a whole number from 0 to {_MAX_INDEX}")
    if "label" not in item:
        raise bad("'label' is missing")
    value = item["label"]
    if type(value) is int:
        value = float(value)
    if type(value) not in (float, str, bool):
        raise bad("'label' must be a number, a string or a boolean")
    if type(value) is str and len(value) > MAX_LABEL_CHARS:
        raise bad(f"'label' is longer than {MAX_LABEL_CHARS:,} characters")
    stamp = item.get("timestamp")
    return Label(request_id, index, value, None if stamp is None else _timestamp(stamp, bad))


def _timestamp(value: Any, bad: Callable[[str], LabelError]) -> datetime:
    if type(value) in (int, float):
        if not 0 <= value < _MAX_EPOCH_S:
            raise bad(f"'timestamp' {value} is not epoch seconds (milliseconds by mistake?)")
        return datetime.fromtimestamp(value, UTC).replace(tzinfo=None)
    if isinstance(value, str):
        with contextlib.suppress(ValueError, OverflowError):
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is not None:
                moment = moment.astimezone(UTC).replace(tzinfo=None)
            return moment
    raise bad("'timestamp' must be an ISO-8601 time or epoch seconds")


def write_labels(
    store: Store, labels: Sequence[Label], *, received_at: datetime | None = None
) -> dict[str, int]:
    """Upsert ``labels`` in one transaction on the writer's cursor; run it on the writer thread.

    A repeated (request_id, index) counts once, the last one winning. Returns ``accepted`` (rows
    written) and ``matched`` (those whose row has a captured prediction).
    """
    latest: dict[tuple[str, int], Label] = {}
    for label in labels:
        latest[(label.request_id, label.index)] = label
    rows = list(latest.values())
    if not rows:
        return {"accepted": 0, "matched": 0}
    kinds = [_kind(label.value) for label in rows]
    pairs = list(zip(rows, kinds, strict=True))
    batch = {
        "request_id": np.array([label.request_id for label in rows], dtype=object),
        "row_index": np.array([label.index for label in rows], dtype=np.int32),
        "type": np.array(kinds, dtype=object),
        "num": np.array([math.nan if k == "string" else float(v.value) for v, k in pairs]),
        "str": np.array([v.value if k == "string" else None for v, k in pairs], dtype=object),
        "label_ts": np.array([label.timestamp or "NaT" for label in rows], dtype="datetime64[us]"),
    }
    cursor = store.writer
    try:
        with _transaction(cursor):
            cursor.register("label_batch", batch)
            try:
                cursor.execute(_UPSERT.format(source="label_batch"), [_received(received_at)])
                matched = _count(cursor, _MATCHED.format(source="label_batch"))
            finally:
                cursor.unregister("label_batch")
    except duckdb.Error as exc:
        raise MonitorError(f"Writing labels failed: {_first_line(exc)}") from exc
    return {"accepted": len(rows), "matched": matched}


def _kind(value: object) -> str:
    if isinstance(value, str):
        return "string"
    return "boolean" if isinstance(value, bool | np.bool_) else "number"


@contextlib.contextmanager
def _transaction(cursor: duckdb.DuckDBPyConnection) -> Iterator[None]:
    cursor.execute("BEGIN TRANSACTION")
    try:
        yield
        cursor.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        raise


def _received(moment: datetime | None) -> datetime:
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _count(cursor: duckdb.DuckDBPyConnection, sql: str) -> int:
    rows = cursor.execute(sql).fetchall()
    return int(rows[0][0]) if rows else 0


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__).rstrip(".") + "."


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
            cursor.execute(_UPSERT.format(source="iw_labels"), [_received(received_at)])
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
# A number as a CSV writer writes it; a leading zero (07) marks a code, which stays text.
_NUMBER_TEXT = r"[+-]?((0|[1-9][0-9]*)(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?"
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
        f"SELECT bool_and(regexp_full_match(trim(label), '{_NUMBER_TEXT}')), "  # noqa: S608
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
