"""Ground truth: parsing POST /labels bodies and writing labels (files: ``evaluation.label_files``).

Labels live in the ``labels`` table, one per (request_id, row_index): a later label for the same
row replaces the earlier one, so sending a batch twice changes nothing. They are joined with the
captured predictions when evaluated (``evaluation.quality``), so a label may arrive before,
long after, or without its prediction; a label written after its prediction is also folded into
the summaries' tallies (``evaluation.tallies``). Writes run on the writer thread
(``StoreWriter.call``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import orjson

from ..errors import MonitorError
from ..store.database import Store
from .tallies import fold_label_tallies

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_ITEMS",
    "MAX_LABEL_CHARS",
    "MAX_REQUEST_ID_CHARS",
    "Label",
    "LabelError",
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
                fold_label_tallies(cursor, "label_batch", -1)
                cursor.execute(_UPSERT.format(source="label_batch"), [_received(received_at)])
                fold_label_tallies(cursor, "label_batch", 1)
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
