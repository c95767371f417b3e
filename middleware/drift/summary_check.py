"""Checks over summaries: any window, and one window against an earlier one.

:func:`check_window` runs the skew check of ``drift.report`` with its counts added up from the
store's summaries (the partial minutes at the edges from raw rows), so a check over a day or a week
costs what its minutes cost. With ``against``, the reference distribution is an earlier window's,
binned on the baseline's bins, instead of the baseline's own counts. :func:`check_merged` runs
the same check over summary rows from any source, such as Parquet files of many replicas.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np

from ..baseline.file import Baseline, FeatureBaseline
from ..errors import MonitorError
from ..settings import parse_duration
from ..summaries.spec import summary_spec
from ..summaries.window import SummaryFigures, merge_summaries, plan_window, store_figures
from .report import run_check

__all__ = ["Against", "check_merged", "check_window", "covered", "parse_against"]

_AGAINST = re.compile(r"^\s*(?:(?P<length>[^@\s]+)\s*@\s*)?(?P<offset>[^@\s]+?)-ago\s*$")


class Against:
    """An earlier window: ``length_s`` long (None: as long as the checked one), ending
    ``offset_s`` before the checked window ends."""

    def __init__(self, offset_s: float, length_s: float | None = None) -> None:
        self.offset_s, self.length_s = offset_s, length_s

    def span(self, window_s: float, end: datetime) -> tuple[datetime, float]:
        """The earlier window's end and length, for a window of ``window_s`` ending at ``end``."""
        return end - timedelta(seconds=self.offset_s), self.length_s or window_s


def parse_against(text: str | None) -> Against | None:
    """``7d-ago`` (a window as long, 7 days earlier) or ``30d@7d-ago`` (30 days ending 7 days
    ago); None for none. Raises ValueError naming what is wrong."""
    if text is None or not text.strip():
        return None
    match = _AGAINST.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an earlier window such as 7d-ago or 30d@7d-ago")
    try:
        offset = parse_duration(match.group("offset"))
        length = parse_duration(match.group("length")) if match.group("length") else None
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an earlier window such as 7d-ago: {exc}") from exc
    if offset <= 0 or (length is not None and length <= 0):
        raise ValueError(f"{text!r}: the offset and the length must be above zero")
    return Against(offset, length)


def _naive(moment: datetime | None) -> datetime:
    moment = moment or datetime.now(UTC)
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def covered(
    cursor: duckdb.DuckDBPyConnection,
    model: str | None,
    baseline: Baseline | None,
    window_s: float,
    now: datetime | None = None,
) -> bool:
    """True when summaries cover all of the window but its edge minutes."""
    end = _naive(now)
    start = end - timedelta(seconds=window_s)
    plan = plan_window(cursor, model or "", summary_spec(baseline).digest, start, end)
    return plan is not None and plan[0] - start <= timedelta(minutes=1)


def check_window(
    connection_factory: Callable[[], duckdb.DuckDBPyConnection],
    baseline: Baseline | None,
    *,
    model: str | None,
    window_s: float,
    now: datetime | None = None,
    against: Against | None = None,
    align: bool = True,
    **kw: Any,
) -> dict[str, Any]:
    """The /drift report of the last ``window_s`` seconds before ``now`` from summaries where
    they cover it (``window.source`` says which), compared with ``baseline`` or, with
    ``against``, with the earlier window (``against`` in the report says which).

    With ``align``, a window that summaries cover starts at a whole minute (up to 59 s
    earlier), so that no raw rows are read for its first minute.
    """
    spec = summary_spec(baseline)

    def figures(cursor: Any, start: datetime, end: datetime) -> SummaryFigures | None:
        return store_figures(cursor, spec, model or "", start, end)

    end = _naive(now)
    if align:
        cursor = connection_factory()
        try:
            if covered(cursor, model, baseline, window_s, end):
                start = end - timedelta(seconds=window_s)
                window_s = (end - start.replace(second=0, microsecond=0)).total_seconds()
        finally:
            cursor.close()
    reference = baseline
    earlier: dict[str, Any] | None = None
    if against is not None:
        if baseline is None:
            raise MonitorError("A comparison of two windows needs a baseline for its bins.")
        before, length = against.span(window_s, end)
        first = run_check(
            connection_factory, baseline, window_s=length, now=before, figures=figures, **kw
        )
        earlier = {**first["window"], "status": first["status"]}
        # too few earlier rows to stand for a distribution: the baseline stays the reference
        earlier["compared"] = first["status"] not in ("insufficient_data", "no_baseline")
        if earlier["compared"]:
            reference = reference_baseline(baseline, first)
    report = run_check(
        connection_factory, reference, window_s=window_s, now=end, figures=figures, **kw
    )
    if earlier is not None:
        report["against"] = earlier
    return report


def check_merged(
    cursor: duckdb.DuckDBPyConnection,
    source: str,
    params: dict[str, Any] | None,
    baseline: Baseline | None,
    *,
    start: datetime,
    end: datetime,
    **kw: Any,
) -> dict[str, Any]:
    """The /drift report of [start, end) from the summary rows of ``source`` (a SELECT, with
    ``params``, already filtered to one model, baseline digest and span: see
    docs/summaries.md), such as Parquet files of a fleet of replicas. Methods that need raw
    rows (outliers, attributions) are left out; ``cursor`` is not closed."""
    merged = SummaryFigures(merge_summaries(cursor, source, params))
    if baseline is not None:
        baseline = replace(baseline, outliers=None, attributions={})
    window_s = (end - start).total_seconds()
    return run_check(
        cursor.cursor, baseline, window_s=window_s, now=end, figures=lambda *_: merged, **kw
    )


@dataclass(frozen=True, slots=True)
class ReferenceFeature(FeatureBaseline):
    """A baseline feature whose reference counts are an earlier window's, bin for bin as the
    report's histogram has them (below and above the range, unseen categories included)."""

    histogram: tuple[float, ...] = ()

    @property
    def rows(self) -> int:
        return int(sum(self.histogram))

    def bin_counts(self) -> np.ndarray:
        return np.asarray(self.histogram, dtype=float)


def reference_baseline(baseline: Baseline, earlier: dict[str, Any]) -> Baseline:
    """``baseline`` with its counts replaced by those of an earlier window's report, on the same
    bins; what the baseline says of types and categories (its list, complete or not) stays."""
    features = {
        name: _from_histogram(fb, earlier["features"].get(name))
        for name, fb in baseline.features.items()
    }
    predictions = {
        name: _from_histogram(fb, earlier["prediction"].get(name))
        for name, fb in baseline.predictions.items()
    }
    return replace(
        baseline, rows=int(earlier["window"]["rows"]), features=features, predictions=predictions
    )


def _from_histogram(fb: FeatureBaseline, entry: dict[str, Any] | None) -> FeatureBaseline:
    k = len(fb.counts)
    found = entry.get("histogram") if entry else None
    current = [float(v) for v in found["current"]] if found else [0.0] * (k + 4)
    values = {f.name: getattr(fb, f.name) for f in fields(FeatureBaseline)}
    values |= {"counts": tuple(int(v) for v in current[:k]), "missing": int(current[k + 2])}
    values |= {"non_finite": 0, "invalid": int(current[k + 3])}
    return ReferenceFeature(**values, histogram=tuple(current))
