"""A window's figures from summary rows: what the raw-row queries of ``baseline.window`` find,
added up from ``summaries`` instead, so that the scoring code runs unchanged on them.

:func:`merge_summaries` merges summary rows from any source (the store's table, Parquet files
of many replicas) with plain SQL; :class:`SummaryFigures` answers each question of the check
from the merged rows; :func:`store_figures` plans a window of the store: whole steps from
summaries, the partial minutes at its edges from the store's own rows, so the result is exact.
"""

# Every SQL text below is built from this module's constants and the caller's relation.
# ruff: noqa: S608

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import duckdb
import numpy as np

from ..baseline.file import FeatureBaseline
from ..baseline.window import NON_FINITE_KEYS, CategoricalWindow, NumericWindow
from .fold import fold_span
from .spec import MERGE_SQL, SummarySpec

__all__ = ["SummaryFigures", "merge_summaries", "plan_window", "store_figures"]

_MINUTE = timedelta(minutes=1)


def merge_summaries(
    cursor: duckdb.DuckDBPyConnection, source: str, params: dict[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    """Merged (role, name, what, key, n, total, squares, low, high) of the summary rows that
    the SELECT ``source`` gives (already filtered to one model, baseline and span)."""
    return cursor.execute(
        f"SELECT role, name, what, key, {MERGE_SQL} FROM ({source}) GROUP BY ALL",
        params or {},
    ).fetchall()


class SummaryFigures:
    """The window figures of the raw-row check, answered from merged summary rows."""

    def __init__(self, merged: Sequence[tuple[Any, ...]]) -> None:
        self.by: dict[tuple[str, str, str], list[tuple[Any, ...]]] = {}
        for role, name, what, key, n, total, squares, low, high in merged:
            self.by.setdefault((what, role, name), []).append((key, n, total, squares, low, high))

    def _one(self, what: str, role: str, name: str = "") -> int:
        return sum(int(r[1]) for r in self.by.get((what, role, name), ()))

    def window_rows(self) -> dict[str, int]:
        """Distinct rows per role (``_drift_window.window_rows``)."""
        return {role: self._one("rows", role) for role in ("input", "output")}

    def parse_failures(self) -> tuple[int, int]:
        """Requests, and those whose input could not be parsed."""
        return self._one("requests", "request"), self._one("parse_failures", "request")

    def type_counts(self) -> dict[tuple[str, str], dict[str, int]]:
        """Values per (role, name) and type."""
        found: dict[tuple[str, str], dict[str, int]] = {}
        for (what, role, name), rows in self.by.items():
            if what == "type":
                for key, n, *_ in rows:
                    found.setdefault((role, name), {})[key] = int(n)
        return found

    def values_per_role(self) -> dict[str, int]:
        """Stored values other than nulls per role."""
        found = {"input": 0, "output": 0}
        for (role, _), types in self.type_counts().items():
            if role in found:
                found[role] += sum(n for t, n in types.items() if t != "null")
        return found

    def numeric_counts(
        self, role: str, features: Sequence[FeatureBaseline]
    ) -> dict[str, NumericWindow]:
        """Bin counts of ``features`` with edges (``_drift_window.numeric_counts``)."""
        result = {}
        for f in features:
            if len(f.edges) < 2:
                continue
            w = NumericWindow(np.zeros(len(f.edges) - 1))
            below = above = 0.0
            for key, n, total, *_ in self.by.get(("bin", role, f.name), ()):
                code, count = int(key), int(n)
                if code >= 0:
                    w.counts[min(code, len(w.counts) - 1)] += count
                elif code in (-1, -2):
                    w.below += count
                    w.far_below += count if code == -2 else 0
                    below += total
                elif code in (-3, -4):
                    w.above += count
                    w.far_above += count if code == -4 else 0
                    above += total
                elif code == -5:
                    w.nan += count
                else:
                    w.inf += count
            w.below_mean = below / w.below if w.below else None
            w.above_mean = above / w.above if w.above else None
            result[f.name] = w
        return result

    def categorical_counts(
        self, role: str, features: Sequence[FeatureBaseline]
    ) -> dict[str, CategoricalWindow]:
        """Counts per baseline category (``_drift_window.categorical_counts``)."""
        result = {}
        for f in features:
            if f.dtype not in ("number", "string", "boolean"):
                continue
            index = {v: i for i, v in enumerate(f.values)}
            w = CategoricalWindow(np.zeros(len(f.values)))
            numbers = f.dtype == "number"
            others: list[tuple[str, int]] = []
            dropped = dropped_distinct = 0
            for key, n, *_ in self.by.get(("category", role, f.name), ()):
                w.counts[index[key]] += int(n)
            for key, n, total, *_ in self.by.get(("other", role, f.name), ()):
                if key is None:  # values beyond the cap, by count only
                    dropped += int(n)
                    dropped_distinct += int(total or 0)
                else:
                    others.append((key, int(n)))
            non_finite = [o for o in others if numbers and o[0] in NON_FINITE_KEYS]
            w.non_finite = sum(n for _, n in non_finite)
            w.outside = sum(n for _, n in others) + dropped - w.non_finite
            w.outside_distinct = len(others) - len(non_finite) + dropped_distinct
            top = sorted(others, key=lambda o: (-o[1], o[0]))[:5]
            w.examples = [o for o in top if not (numbers and o[0] in NON_FINITE_KEYS)][:3]
            result[f.name] = w
        return result

    def output_fields(self) -> dict[str, dict]:
        """Each output field as ``_prediction_fields.output_fields`` with one bucket."""
        fields: dict[str, dict] = {}
        for (what, role, name), rows in self.by.items():
            if what != "type" or role != "output":
                continue
            types = {key: (int(n), low, high) for key, n, _, _, low, high in rows}
            number = types.get("number", (0, None, None))
            finite = number[0] - self._one("non_finite", "output", name)
            fields[name] = {
                "buckets": np.asarray([sum(t[0] for t in types.values())], dtype=np.int64),
                "strings": types.get("string", (0,))[0],
                "numbers": finite,
                "low": number[1] if finite else math.inf,
                "high": number[2] if finite else -math.inf,
                "integral": self._one("fraction", "output", name) == 0,
            }
        return fields


def plan_window(
    cursor: duckdb.DuckDBPyConnection,
    model: str,
    digest: str,
    start: datetime,
    end: datetime,
) -> tuple[datetime, datetime] | None:
    """The whole steps [a, b) of [start, end) that summaries of (model, baseline) cover, or None
    when they cover no whole minute of it (the check then reads the store's rows)."""
    try:
        found = cursor.execute(
            "SELECT since FROM summary_baselines WHERE model = ? AND baseline = ?",
            [model, digest],
        ).fetchone()
    except duckdb.CatalogException:  # a store from before summaries, opened read-only
        return None
    if found is None:
        return None
    a = max(_ceil_minute(start), found[0])
    b = end.replace(second=0, microsecond=0)
    if a >= b:
        return None
    # a rolled-up step across an edge moves that edge to the step's end (or start)
    a2, b2 = cursor.execute(
        """SELECT max(minute + to_seconds(step_s)) FILTER (minute < $a AND
                      minute + to_seconds(step_s) > $a),
                  min(minute) FILTER (minute < $b AND minute + to_seconds(step_s) > $b)
           FROM summaries WHERE model = $model AND baseline = $digest AND step_s > 60
             AND minute < $b AND minute + to_seconds(step_s) > $a""",
        {"a": a, "b": b, "model": model, "digest": digest},
    ).fetchone()
    a, b = a2 or a, b2 or b
    return (a, b) if a < b else None


def store_figures(
    cursor: duckdb.DuckDBPyConnection,
    spec: SummarySpec,
    model: str,
    start: datetime,
    end: datetime,
) -> SummaryFigures | None:
    """The figures of [start, end) from the store's summaries of ``model`` (``''``: every
    request) and its rows at the edges; None when summaries cover no whole minute of it.

    ``cursor`` must see the scope's rows only (``scoped_cursors``), as the raw check's does.
    """
    plan = plan_window(cursor, model, spec.digest, start, end)
    if plan is None:
        return None
    a, b = plan
    # The minute being written holds, in summaries, every row stored so far: when none of them
    # is at or after the window's end (a check of the traffic until now), it is read from them.
    tail = b < end and b == end.replace(second=0, microsecond=0) and _nothing_after(cursor, b, end)
    spans = [(start, a)] if tail else [(start, a), (b, end)]
    edges, params = fold_span(spec, spans, model=model)
    last = "minute = $b AND step_s = 60" if tail else "false"
    source = f"""
        SELECT * FROM summaries
        WHERE model = $model AND baseline = $digest AND minute >= $a
          AND (minute + to_seconds(step_s) <= $b OR {last})
        UNION ALL ({edges})"""
    params |= {"model": model, "digest": spec.digest, "a": a, "b": b}
    return SummaryFigures(merge_summaries(cursor, source, params))


def _nothing_after(cursor: duckdb.DuckDBPyConnection, b: datetime, end: datetime) -> bool:
    """True when the store holds no request, and no feature row, in [end, b + 1 minute)."""
    params = {"end": end, "next": b + _MINUTE}
    row = cursor.execute(
        """SELECT (SELECT count(*) FROM requests WHERE ts >= $end AND ts < $next)
                + (SELECT count(*) FROM features WHERE ts >= $end AND ts < $next)""",
        params,
    ).fetchone()
    return not row or not row[0]


def _ceil_minute(moment: datetime) -> datetime:
    floor = moment.replace(second=0, microsecond=0)
    return floor if floor == moment else floor + _MINUTE
