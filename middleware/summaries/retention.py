"""Summaries as they age: partial minute rows merged, minutes rolled up into hours, old steps
deleted, as Prometheus-style downsampling does (docs/summaries.md, "Retention").

Runs in the writer's maintenance, on the writer's cursor, one transaction per pass. Raw rows
keep their own ``retention`` and ``max_db_bytes``; summaries keep ``summary_retention``.
"""

# Every SQL text below is built from this module's constants.
# ruff: noqa: S608

from __future__ import annotations

import contextlib
from datetime import datetime, timedelta

import duckdb

from .spec import GROUP_COLUMNS, MAX_CATEGORIES, MERGE_SQL

__all__ = ["maintain_summaries"]

_KEYS = ", ".join(GROUP_COLUMNS)
_HOUR = 3600

# Merge the rows of the steps in [$lo, $hi) into one row per (step, what it counts), at the step
# given (60: the partial rows of closed minutes; 3600: minutes into hours). Categories beyond the
# cap (MAX_CATEGORIES per step and feature, not in the baseline's list) go under a NULL key.
_MERGE = f"""
CREATE TEMP TABLE iw_merged AS
WITH merged AS (
    SELECT time_bucket(to_seconds($step), minute) AS minute, greatest(max(step_s), $step) AS step_s,
           {_KEYS}, {MERGE_SQL}
    FROM summaries WHERE minute >= $lo AND minute < $hi
    GROUP BY time_bucket(to_seconds($step), minute), {_KEYS}),
ranked AS (
    SELECT *, what = 'other' AND key IS NOT NULL AND key NOT IN ('nan', 'inf', '-inf')
              AND row_number() OVER (PARTITION BY minute, model, baseline, role, name, what,
                                     key IS NULL OR key IN ('nan', 'inf', '-inf')
                                     ORDER BY n DESC, key) > {MAX_CATEGORIES}
              AS dropped
    FROM merged)
SELECT minute, step_s, model, baseline, role, name, what, CASE WHEN dropped THEN NULL ELSE key END
       AS key, sum(n)::BIGINT AS n,
       CASE WHEN bool_or(dropped)
            THEN coalesce(sum(total) FILTER (NOT dropped), 0) + count(*) FILTER (dropped)
            ELSE sum(total) END AS total,
       sum(squares) AS squares, min(low) AS low, max(high) AS high
FROM ranked
GROUP BY minute, step_s, model, baseline, role, name, what,
         CASE WHEN dropped THEN NULL ELSE key END
"""


def maintain_summaries(
    cursor: duckdb.DuckDBPyConnection,
    now: datetime,
    *,
    retention_s: float,
    rollup_after_s: float,
) -> dict[str, int]:
    """Delete summaries older than ``retention_s``, roll minutes older than ``rollup_after_s``
    into hours, and merge the partial rows of closed minutes; ``now`` is naive UTC. Returns
    the rows deleted and the rows before and after merging."""
    counts = {"expired": 0, "merged_from": 0, "merged_to": 0}
    cutoff = now - timedelta(seconds=retention_s)
    rollup = _floor_hour(now - timedelta(seconds=rollup_after_s))
    closed = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    cursor.execute("BEGIN TRANSACTION")
    try:
        row = cursor.execute("DELETE FROM summaries WHERE minute < ?", [cutoff]).fetchone()
        counts["expired"] = int(row[0]) if row else 0
        # hours: every minute row before the rollup line; minutes: closed minutes with partials
        (first,) = cursor.execute(
            "SELECT min(minute) FROM summaries WHERE step_s < ? AND minute < ?", [_HOUR, rollup]
        ).fetchone()
        if first is not None:
            _merge(cursor, _HOUR, _floor_hour(first), rollup, counts)
        (first,) = cursor.execute(
            """SELECT min(minute) FROM (SELECT minute FROM summaries
               WHERE step_s = 60 AND minute >= $lo AND minute < $hi
               GROUP BY minute, model, baseline, role, name, what, key HAVING count(*) > 1)""",
            {"lo": rollup, "hi": closed},
        ).fetchone()
        if first is not None:
            _merge(cursor, 60, first, closed, counts)
        cursor.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            cursor.execute("ROLLBACK")
        raise
    return counts


def _merge(
    cursor: duckdb.DuckDBPyConnection, step: int, lo: datetime, hi: datetime, counts: dict
) -> None:
    if lo >= hi:
        return
    params = {"step": step, "lo": lo, "hi": hi}
    cursor.execute(_MERGE, params)
    try:
        row = cursor.execute(
            "DELETE FROM summaries WHERE minute >= $lo AND minute < $hi", {"lo": lo, "hi": hi}
        ).fetchone()
        counts["merged_from"] += int(row[0]) if row else 0
        row = cursor.execute("INSERT INTO summaries SELECT * FROM iw_merged").fetchone()
        counts["merged_to"] += int(row[0]) if row else 0
    finally:
        cursor.execute("DROP TABLE IF EXISTS iw_merged")


def _floor_hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)
