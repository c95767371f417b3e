"""A baseline from the log store: the inputs and outputs logged in a time range.

The same summaries as from a file (statistics and quantiles, exact bin counts, exact category
counts), computed in SQL over the long ``features`` table, one value per row; the bins are
counted by the skew check's own query, so that a baseline and a check bin values alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from ..errors import MonitorError
from ..stats.outliers import OutlierModel, fit_outlier_model
from ..stats.summary_sql import feature_key_sql, run_with_progress
from .file import FeatureBaseline
from .profiles import (
    LOW_CARDINALITY,
    QUANTILE_SAMPLE,
    TOP_VALUES,
    baseline_document,
    bin_edges,
    categorical_profile,
    round_stat,
)
from .window import numeric_counts, window_rows

__all__ = ["summarize_store"]

_MODEL_SAMPLE = 200_000  # input rows: half fit the outlier model, half measure its scores
_MODEL_FEATURES = 150


def summarize_store(
    con: Any,
    bins: int,
    time_range: tuple[datetime, datetime] | None,
    wanted: frozenset[str],
    skip: frozenset[str],
    say: Callable,
) -> dict[str, Any]:
    """The baseline document of the features and outputs logged within ``time_range`` (all
    of the store when None): inputs become features, outputs the prediction section."""
    if time_range is None:
        first, last = con.execute("SELECT min(ts), max(ts) FROM features").fetchone()
        if first is None:
            raise MonitorError("the log store holds no features to build a baseline from")
        time_range = (first, last + timedelta(microseconds=1))
    start, end = (t.astimezone(UTC).replace(tzinfo=None) if t.tzinfo else t for t in time_range)
    span = {"start": start, "end": end}
    say("counting rows")
    rows = window_rows(con, start, end)
    sql = f"""
        SELECT role, name, type, count(*), count(num) - count(x), min(x), max(x), avg(x),
               stddev_pop(x), approx_count_distinct(x),
               reservoir_quantile(x, $quantiles, {QUANTILE_SAMPLE})
        FROM (SELECT f.role, f.name, f.type, f.num,
                     CASE WHEN f.type = 'number' AND isfinite(f.num) THEN f.num END AS x
              FROM features f WHERE f.ts >= $start AND f.ts < $end)
        GROUP BY ALL
    """  # noqa: S608 -- constant SQL; every value is a bound parameter
    quantiles = [i / bins for i in range(1, bins)]
    found = run_with_progress(
        con, sql, span | {"quantiles": quantiles}, "scan 1/3: statistics", say
    )
    by_feature: dict[tuple[str, str], dict[str, tuple]] = {}
    for role, name, value_type, *stats in found:
        if name not in skip:
            by_feature.setdefault((role, name), {})[value_type] = tuple(stats)
    provisional: dict[tuple[str, str], FeatureBaseline] = {}
    same_type: dict[tuple[str, str], int] = {}
    for (role, name), by_type in by_feature.items():
        typed = {t: v for t, v in by_type.items() if t != "null"}
        if not typed:
            continue
        dtype = max(typed, key=lambda t: typed[t][0])
        present = sum(v[0] for v in typed.values())
        common = {"name": name, "dtype": dtype, "missing": max(rows.get(role, 0) - present, 0)}
        common["invalid"] = present - typed[dtype][0]
        same_type[role, name] = typed[dtype][0]
        if dtype == "number":
            _, non_finite, lo, hi, mean, std, distinct, qs = typed[dtype]
            few = distinct <= LOW_CARDINALITY
            if name not in wanted and not few:
                provisional[role, name] = FeatureBaseline(
                    kind="numeric",
                    non_finite=non_finite,
                    edges=tuple(bin_edges(lo, hi, qs or [])),
                    minimum=lo,
                    maximum=hi,
                    mean=round_stat(mean),
                    std=round_stat(std),
                    **common,
                )
                continue
        provisional[role, name] = FeatureBaseline(kind="categorical", **common)
    result: dict[tuple[str, str], FeatureBaseline] = {}
    for role in ("input", "output"):
        mine = [f for (r, _), f in provisional.items() if r == role]
        numeric = [f for f in mine if f.kind == "numeric"]
        say(f"scan 2/3: histograms of {len(numeric)} {role} features")
        counted = numeric_counts(con, role, numeric, start, end)
        for f in numeric:
            window = counted.get(f.name)
            counts = tuple(int(n) for n in window.counts) if window is not None else ()
            result[role, f.name] = replace(f, counts=counts)
    say("scan 3/3: categories")
    pairs = [(r, f) for (r, _), f in provisional.items()]
    result |= _store_categories(con, pairs, same_type, span)
    doc_rows = rows.get("input", 0) or rows.get("output", 0)
    order = sorted(n for r, n in result if r == "input")
    doc = baseline_document(
        doc_rows, bins, order, {n: f for (r, n), f in result.items() if r == "input"}, {}
    )
    doc["predictions"] = {n: f.to_json() for (r, n), f in sorted(result.items()) if r == "output"}
    model = _outlier_model(con, doc["features"], span, say)
    if model is not None:
        doc["outliers"] = model.to_json()
    return doc


def _outlier_model(
    con: Any, features: dict[str, Any], span: dict[str, Any], say: Callable
) -> OutlierModel | None:
    """The multivariate model of the input features, fitted on a reservoir sample of the
    logged input rows, each row's values gathered from the long table."""
    names = list(features)[:_MODEL_FEATURES]
    if not names:
        return None
    say("outlier model")
    sql = f"""
        WITH rows AS (
            SELECT request_id, row_index, row_number() OVER () - 1 AS k FROM (
                SELECT DISTINCT request_id, row_index FROM features
                WHERE role = 'input' AND ts >= $start AND ts < $end
            ) USING SAMPLE reservoir({_MODEL_SAMPLE} ROWS) REPEATABLE (7))
        SELECT r.k, list_position($names, f.name) - 1 AS j, f.type = 'number' AS number,
               f.num, {feature_key_sql("f")} AS key
        FROM features f JOIN rows r USING (request_id, row_index)
        WHERE f.role = 'input' AND f.ts >= $start AND f.ts < $end AND f.name = ANY($names)
    """  # noqa: S608 -- constant SQL; every value is a bound parameter
    found = con.execute(sql, span | {"names": names}).fetchnumpy()
    if not len(found["k"]):
        return None
    k, j = np.asarray(found["k"], dtype=np.intp), np.asarray(found["j"], dtype=np.intp)
    numeric_names = [n for n in names if features[n]["kind"] == "numeric"]
    categorical_names = [n for n in names if features[n]["kind"] == "categorical"]
    slots = {n: i for i, n in enumerate(numeric_names)} | {
        n: i for i, n in enumerate(categorical_names)
    }
    is_numeric = np.asarray([features[n]["kind"] == "numeric" for n in names])
    slot = np.asarray([slots[n] for n in names], dtype=np.intp)
    size = int(k.max()) + 1
    numbers = np.full((size, len(numeric_names)), np.nan)
    hit = is_numeric[j] & np.ma.filled(np.ma.asarray(found["number"]), False)
    numbers[k[hit], slot[j[hit]]] = np.ma.filled(np.ma.asarray(found["num"]), np.nan)[hit]
    keys = np.ma.filled(np.ma.asarray(found["key"], dtype=object), None)
    cats = np.full((size, len(categorical_names)), None, dtype=object)
    hit = ~is_numeric[j]
    cats[k[hit], slot[j[hit]]] = keys[hit]
    numeric = {n: numbers[:, i] for i, n in enumerate(numeric_names)}
    categorical = {n: cats[:, i].tolist() for i, n in enumerate(categorical_names)}
    values = {n: features[n]["values"] for n in categorical}
    return fit_outlier_model(numeric, categorical, values)


def _store_categories(
    con: Any,
    features: list[tuple[str, FeatureBaseline]],
    present_same: dict[tuple[str, str], int],
    span: dict[str, Any],
) -> dict[tuple[str, str], FeatureBaseline]:
    wanted = [(r, f) for r, f in features if f.kind == "categorical"]
    if not wanted:
        return {}
    sql = f"""
        WITH spec AS (SELECT unnest($roles::VARCHAR[]) AS role, unnest($names::VARCHAR[]) AS name,
                             unnest($dtypes::VARCHAR[]) AS dtype),
        agg AS (SELECT f.role, f.name, {feature_key_sql("f")} AS key, count(*) AS n
                FROM features f JOIN spec s
                  ON s.role = f.role AND s.name = f.name AND s.dtype = f.type
                WHERE f.ts >= $start AND f.ts < $end GROUP BY ALL)
        SELECT role, name, key, n, count(*) OVER (PARTITION BY role, name) FROM agg
        QUALIFY row_number() OVER (PARTITION BY role, name ORDER BY n DESC, key) <= $limit
    """  # noqa: S608 -- constant SQL; every value is a bound parameter
    params = span | {
        "roles": [r for r, _ in wanted],
        "names": [f.name for _, f in wanted],
        "dtypes": [f.dtype for _, f in wanted],
        "limit": 4 * TOP_VALUES,
    }
    counted: dict[tuple[str, str], list[tuple[str, int]]] = {}
    distinct: dict[tuple[str, str], int] = {}
    for role, name, key, n, d in con.execute(sql, params).fetchall():
        counted.setdefault((role, name), []).append((key, int(n)))
        distinct[role, name] = int(d)
    result = {}
    for role, f in wanted:
        same = counted.get((role, f.name), [])
        present = f.invalid + present_same[role, f.name]
        feature = categorical_profile(f.name, f.dtype, f.missing, present, same, f.invalid)
        result[role, f.name] = replace(feature, distinct=distinct.get((role, f.name), 0))
    return result
