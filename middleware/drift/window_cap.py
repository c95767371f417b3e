"""The newest part of a skew check's window, when the whole would cost the model too much.

A check scans every feature row in its window, so at a high request rate a one-hour window makes
each check take tens of seconds of the model's CPU. A check reads at most ``max_window_rows``
input rows: the newest ones. Far fewer rows than that already tell a real shift from noise.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

__all__ = ["capped_window"]

_TOTAL = "SELECT coalesce(sum(input_rows), 0) FROM requests WHERE ts >= ? AND ts < ?"
_OLDEST_KEPT = """
SELECT min(ts) FROM (
    SELECT ts, sum(input_rows) OVER (ORDER BY ts DESC ROWS UNBOUNDED PRECEDING) AS newer
    FROM requests WHERE ts >= ? AND ts < ? AND input_rows > 0
) WHERE newer <= ?
"""


def capped_window(cursor: Any, end: datetime, window_s: float, max_rows: int) -> tuple[float, bool]:
    """The seconds before naive-UTC ``end`` that hold at most ``max_rows`` input rows.

    Returns ``(window_s, False)`` when the whole window fits, else the shorter window and True.
    """
    start = end - timedelta(seconds=window_s)
    (total,) = cursor.execute(_TOTAL, [start, end]).fetchone()
    if total <= max_rows:
        return window_s, False
    (oldest,) = cursor.execute(_OLDEST_KEPT, [start, end, max_rows]).fetchone()
    if oldest is None:  # a single request holds more rows than the cap: take the newest one
        (oldest,) = cursor.execute("SELECT max(ts) FROM requests WHERE ts >= ? AND ts < ?",
                                   [start, end]).fetchone()  # fmt: skip
    return max((end - oldest).total_seconds(), 1e-6), True
