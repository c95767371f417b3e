"""The skew check: summarize a window of the log store in DuckDB and compare it with a baseline.

Every figure of the window comes from a handful of aggregate queries over the ``features`` table
(one scan each, grouped into bins against the baseline's edges, which travel as bound
parameters); Python sees only bin counts. docs/drift.md explains methods and margins.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np

from ._baseline import Baseline, FeatureBaseline, bin_tree_sql, number_key_sql
from ._statistics import (
    DEFAULT_THRESHOLDS,
    js_distance,
    noise_threshold,
    psi,
    wasserstein_binned,
)

__all__ = [
    "CategoricalWindow",
    "NumericWindow",
    "categorical_counts",
    "evaluate_feature",
    "numeric_counts",
    "run_check",
    "window_rows",
]

PARSE_FAILURES = ("parse_error", "not_json", "unknown_shape")
# the share above which type_mismatch, unseen_categories, out_of_range, unexpected_feature
# and parse_error are raised (docs/drift.md, "Schema anomalies")
SMALL_SHARE = 0.01
RANGE_MARGIN = 0.1  # out_of_range: beyond min or max by a tenth of the baseline's range
MISSING_MARGIN = 0.05  # completeness: a missing share 5 points over the baseline's, plus noise
MAX_UNEXPECTED = 20
_NON_FINITE_KEYS = ("nan", "inf", "-inf")

_WINDOW = "f.ts >= $start AND f.ts < $end AND f.role = $role"
_KEY = (
    "CASE f.type WHEN 'string' THEN f.str WHEN 'boolean' THEN "
    f"CASE WHEN f.num = 1 THEN 'true' ELSE 'false' END ELSE {number_key_sql('f.num')} END"
)


@dataclass(slots=True)
class NumericWindow:
    """A numeric feature's number-typed values in a window, by bin (see docs/drift.md)."""

    counts: np.ndarray
    below: int = 0
    above: int = 0
    far_below: int = 0
    far_above: int = 0
    nan: int = 0
    inf: int = 0
    below_mean: float | None = None
    above_mean: float | None = None


@dataclass(slots=True)
class CategoricalWindow:
    """A categorical feature's values of its baseline type, by baseline category."""

    counts: np.ndarray
    outside: int = 0  # values not in the baseline's list
    outside_distinct: int = 0
    examples: list[tuple[str, int]] = field(default_factory=list)
    non_finite: int = 0  # NaN and infinity of a number-typed feature, when not in its domain


def window_rows(cursor: Any, start: datetime, end: datetime) -> dict[str, int]:
    """Distinct (request_id, row_index) per role in [start, end)."""
    # Row 0 of a request is counted by request_id alone, with the role a constant: DuckDB does
    # that several times faster than pairs or a GROUP BY role; later batch rows are rarer. The
    # 64-bit hashes take a fifth of the memory of the ids (a collision among 10 million ids has
    # a chance of 3 in a million, and would undercount by one row).
    sql = """
        SELECT (SELECT count(DISTINCT hash(request_id)) FROM features f
                WHERE f.ts >= $start AND f.ts < $end AND f.role = $role AND f.row_index = 0),
               (SELECT count(DISTINCT hash(request_id, row_index)) FROM features f
                WHERE f.ts >= $start AND f.ts < $end AND f.role = $role AND f.row_index > 0)
    """
    result = {}
    for role in ("input", "output"):
        first, more = cursor.execute(sql, {"start": start, "end": end, "role": role}).fetchone()
        result[role] = int(first) + int(more)
    return result


def numeric_counts(
    cursor: Any,
    role: str,
    features: Sequence[FeatureBaseline],
    start: datetime,
    end: datetime,
) -> dict[str, NumericWindow]:
    """Bin the number-typed values of ``features`` (with edges) against their baseline edges."""
    features = [f for f in features if len(f.edges) >= 2]
    if not features:
        return {}
    width = max(len(f.edges) for f in features) - 1
    params: dict[str, Any] = {"start": start, "end": end, "role": role}
    params["names"] = [f.name for f in features]
    params["lo_m"] = [f.edges[0] - _margin(f) for f in features]
    params["hi_m"] = [f.edges[-1] + _margin(f) for f in features]
    # e0 = min, e1.. inner edges, then max repeated: a feature with fewer bins than the widest
    # ends in "x < max" tests, and its values equal to max land past its last bin (clamped below)
    for j in range(width + 1):
        params[f"e{j}"] = [f.edges[min(j, len(f.edges) - 1)] for f in features]
    columns = "".join(f", unnest($e{j}::DOUBLE[]) AS e{j}" for j in range(width + 1))
    tests = [f"f.num < s.e{j}" for j in range(width)] + [f"f.num <= s.e{width}"]
    below = "CASE WHEN f.num = '-inf'::DOUBLE THEN -7 WHEN f.num < s.lo_m THEN -2 ELSE -1 END"
    above = (
        "CASE WHEN isnan(f.num) THEN -5 WHEN f.num = 'inf'::DOUBLE THEN -6 "
        "WHEN f.num > s.hi_m THEN -4 ELSE -3 END"
    )
    # leaves: 0 is below min, j is bin j - 1, width + 1 is above max (or NaN)
    leaves = {0: below, width + 1: above}
    tree = bin_tree_sql(tests, lambda r: leaves.get(r, str(r - 1)))
    sql = f"""
        WITH spec AS (
            SELECT unnest($names::VARCHAR[]) AS name, unnest($lo_m::DOUBLE[]) AS lo_m,
                   unnest($hi_m::DOUBLE[]) AS hi_m {columns})
        SELECT f.name, {tree} AS b, count(*), sum(f.num)
        FROM features f JOIN spec s ON s.name = f.name
        WHERE {_WINDOW} AND f.type = 'number'
        GROUP BY ALL
    """  # noqa: S608 -- only generated aliases; names and edges are bound parameters
    result = {f.name: NumericWindow(np.zeros(len(f.edges) - 1)) for f in features}
    for name, code, count, total in cursor.execute(sql, params).fetchall():
        w = result[name]
        if code >= 0:
            w.counts[min(code, len(w.counts) - 1)] += count
        elif code in (-1, -2):
            w.below += count
            w.far_below += count if code == -2 else 0
            w.below_mean = _merge_mean(w.below_mean, w.below - count, total, count)
        elif code in (-3, -4):
            w.above += count
            w.far_above += count if code == -4 else 0
            w.above_mean = _merge_mean(w.above_mean, w.above - count, total, count)
        elif code == -5:
            w.nan += count
        else:
            w.inf += count
    return result


def _merge_mean(mean: float | None, before: int, total: float, count: int) -> float:
    return (total if mean is None else mean * before + total) / (before + count)


def _margin(f: FeatureBaseline) -> float:
    spread = f.edges[-1] - f.edges[0]
    return RANGE_MARGIN * (spread if spread > 0 else max(abs(f.edges[0]), 1e-9))


def categorical_counts(
    cursor: Any,
    role: str,
    features: Sequence[FeatureBaseline],
    start: datetime,
    end: datetime,
) -> dict[str, CategoricalWindow]:
    """Count the values of ``features`` per baseline category; values of other types are left
    to the type counts, so that a type mismatch never reads as an unseen category too."""
    if not features:
        return {}
    names, keys, index = [], [], []
    for f in features:
        names += [f.name] * len(f.values)
        keys += list(f.values)
        index += range(len(f.values))
    sql = f"""
        WITH spec AS (SELECT unnest($names::VARCHAR[]) AS name,
                             unnest($dtypes::VARCHAR[]) AS dtype),
        domain AS (SELECT unnest($dnames::VARCHAR[]) AS name, unnest($dkeys::VARCHAR[]) AS key,
                          unnest($didx::INTEGER[]) AS idx),
        agg AS (
            SELECT f.name, {_KEY} AS key, count(*) AS n
            FROM features f JOIN spec s ON s.name = f.name AND s.dtype = f.type
            WHERE {_WINDOW}
            GROUP BY ALL)
        SELECT a.name, d.idx, sum(a.n), count(*),
               sum(a.n) FILTER (a.key IN (SELECT unnest($non_finite::VARCHAR[]))),
               count(*) FILTER (a.key IN (SELECT unnest($non_finite::VARCHAR[]))),
               max_by({{'key': a.key, 'n': a.n}}, a.n, 5)
        FROM agg a LEFT JOIN domain d ON d.name = a.name AND d.key = a.key
        GROUP BY ALL
    """  # noqa: S608 -- no user text: names and values are bound parameters
    params = {
        "start": start,
        "end": end,
        "role": role,
        "names": [f.name for f in features],
        "dtypes": [f.dtype for f in features],
        "dnames": names,
        "dkeys": keys,
        "didx": index,
        "non_finite": list(_NON_FINITE_KEYS),
    }
    result = {f.name: CategoricalWindow(np.zeros(len(f.values))) for f in features}
    number = {f.name for f in features if f.dtype == "number"}
    found = cursor.execute(sql, params).fetchall()
    for name, idx, count, distinct, non_finite, non_finite_keys, top in found:
        w = result[name]
        if idx is not None:
            w.counts[idx] += count
            continue
        # NaN and infinity outside the domain are non-finite values, not unseen categories
        numbers = name in number
        w.non_finite = int(non_finite or 0) if numbers else 0
        w.outside = int(count) - w.non_finite
        w.outside_distinct = int(distinct) - (int(non_finite_keys or 0) if numbers else 0)
        w.examples = [
            (item["key"], int(item["n"]))
            for item in top
            if not (numbers and item["key"] in _NON_FINITE_KEYS)
        ][:3]
    return result


def type_counts(cursor: Any, start: datetime, end: datetime) -> dict[tuple[str, str], dict]:
    """Values per (role, name) and type in the window, for every name logged."""
    found = cursor.execute(
        "SELECT role, name, type, count(*) FROM features f "
        "WHERE f.ts >= $start AND f.ts < $end GROUP BY ALL",
        {"start": start, "end": end},
    ).fetchall()
    result: dict[tuple[str, str], dict[str, int]] = {}
    for role, name, kind, count in found:
        result.setdefault((role, name), {})[kind] = int(count)
    return result


def parse_failures(cursor: Any, start: datetime, end: datetime) -> tuple[int, int]:
    """Requests in the window, and those whose input could not be parsed."""
    total, failed = cursor.execute(
        "SELECT count(*), count(*) FILTER (input_status IN (SELECT unnest($failures))) "
        "FROM requests r WHERE r.ts >= $start AND r.ts < $end",
        {"start": start, "end": end, "failures": list(PARSE_FAILURES)},
    ).fetchone()
    return int(total), int(failed or 0)


def run_check(
    connection_factory: Callable[[], duckdb.DuckDBPyConnection],
    baseline: Baseline | None,
    *,
    window_s: float,
    now: datetime | None = None,
    min_rows: int = 100,
    baseline_path: str | None = None,
) -> dict[str, Any]:
    """Compare the last ``window_s`` seconds of the log store with ``baseline``.

    Returns the /drift report of the contract. ``connection_factory`` gives a cursor of the
    store, which is closed before returning; fewer than ``min_rows`` rows give
    ``insufficient_data`` rather than a verdict, and no baseline gives ``no_baseline`` (with
    row counts and parse failures still reported).
    """
    checked = now or datetime.now(UTC)
    end = checked.astimezone(UTC).replace(tzinfo=None) if checked.tzinfo else checked
    start = end - timedelta(seconds=window_s)
    cursor = connection_factory()
    try:
        rows = window_rows(cursor, start, end)
        total_requests, failed = parse_failures(cursor, start, end)
        anomalies = _parse_anomaly(total_requests, failed)
        inputs = rows.get("input", 0)
        counted = inputs if baseline is None or baseline.features else rows.get("output", 0)
        report: dict[str, Any] = {
            "status": "no_baseline" if baseline is None else "insufficient_data",
            "checked_at": _iso(end),
            "window": {"start": _iso(start), "end": _iso(end), "rows": inputs},
            "baseline": {
                "path": baseline_path or (baseline.path if baseline else None),
                "rows": baseline.rows if baseline else None,
            },
            "drift_detected": False,
            "skew_detected": bool(anomalies),
            "drifted_features": [],
            "features": {},
            "prediction": {},
            "schema_anomalies": anomalies,
        }
        if baseline is None:
            return report
        if counted < min_rows:
            report["status"] = "alert" if anomalies else "insufficient_data"
            return report
        types = type_counts(cursor, start, end)
        for role, section, key in (
            ("input", baseline.features, "features"),
            ("output", baseline.predictions, "prediction"),
        ):
            numeric = [f for f in section.values() if f.kind == "numeric"]
            categorical = [f for f in section.values() if f.kind == "categorical"]
            windows: dict[str, Any] = numeric_counts(cursor, role, numeric, start, end)
            windows |= categorical_counts(cursor, role, categorical, start, end)
            for name, fb in section.items():
                entry, found = evaluate_feature(
                    fb, rows.get(role, 0), types.get((role, name), {}), windows.get(name)
                )
                report[key][name] = entry
                anomalies.extend(found)
            if section or role == "input":
                anomalies.extend(_unexpected(role, section, types, rows.get(role, 0)))
    finally:
        cursor.close()
    _verdict(report, baseline)
    return report


def _verdict(report: dict[str, Any], baseline: Baseline) -> None:
    drifted_inputs = [n for n, e in report["features"].items() if e["drifted"]]
    drifted_outputs = [n for n, e in report["prediction"].items() if e["drifted"]]
    critical = any(e.get("critical") and e["drifted"] for e in report["features"].values())
    share = baseline.drift_share
    enough = bool(drifted_inputs) and (
        share is None or len(drifted_inputs) >= share * max(len(report["features"]), 1)
    )
    report["drifted_features"] = drifted_inputs + drifted_outputs
    report["drift_detected"] = critical or enough or bool(drifted_outputs)
    report["skew_detected"] = bool(report["schema_anomalies"])
    report["status"] = "alert" if report["drift_detected"] or report["skew_detected"] else "ok"


def evaluate_feature(
    fb: FeatureBaseline, rows: int, types: dict[str, int], window: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One feature's report entry and schema anomalies, from its window counts.

    ``rows`` is the window's row count, ``types`` the feature's values per type and ``window``
    what :func:`numeric_counts` or :func:`categorical_counts` found (None: no values).
    """
    present = sum(n for t, n in types.items() if t != "null")
    same_type = types.get(fb.dtype, 0)
    missing = max(rows - present, 0)
    other_types = present - same_type
    base = fb.bin_counts()
    entry: dict[str, Any] = {"kind": fb.kind, "method": fb.method, "rows": rows}
    if fb.kind == "numeric":
        w = window if window is not None else NumericWindow(np.zeros(len(fb.counts)))
        current = np.asarray(
            [*w.counts, w.below, w.above, missing, w.nan + w.inf + other_types], dtype=float
        )
        centers = _centers(fb, w)
        k = len(fb.counts)
        scale = fb.std if fb.std and fb.std > 0 else max(abs(fb.mean or 0.0), 1.0)
        value_bins = slice(0, k + 2)
        wasserstein = wasserstein_binned(base[value_bins], current[value_bins], centers, scale)
    else:
        w = window if window is not None else CategoricalWindow(np.zeros(len(fb.counts)))
        other, unseen = (w.outside, 0) if not fb.complete else (0, w.outside)
        invalid = other_types + w.non_finite
        current = np.asarray([*w.counts, other, unseen, missing, invalid], dtype=float)
    if fb.method == "jensenshannon":
        score = js_distance(base, current)
        noise = noise_threshold("jensenshannon", base, rows, fb.rows)
    elif fb.method == "psi":
        score = psi(base, current)
        noise = noise_threshold("psi", base, rows, fb.rows)
    else:
        score = wasserstein
        k = len(fb.counts)
        noise = noise_threshold(
            "wasserstein", base[:k], rows, fb.rows, centers=centers[:k], scale=scale
        )
    threshold = max(fb.threshold or DEFAULT_THRESHOLDS[fb.method], noise)
    entry |= {"score": _round(score), "threshold": _round(threshold)}
    entry["drifted"] = bool(present > 0 and score > threshold)
    if fb.kind == "numeric":
        entry["wasserstein"] = _round(wasserstein)
    entry["psi"] = _round(psi(base, current))
    if fb.kind == "categorical":
        entry["top_shift"] = _top_shift(fb, base, current, w)
    entry["missing_share"] = _round(missing / rows if rows else 0.0)
    entry["baseline_missing_share"] = _round(fb.missing_share)
    entry["histogram"] = {
        "bins": _bin_labels(fb),
        "baseline": [int(v) for v in base],
        "current": [int(v) for v in current],
    }
    if fb.critical:
        entry["critical"] = True
    return entry, _anomalies(fb, rows, present, same_type, other_types, types, w)


def _bin_labels(fb: FeatureBaseline) -> list[str]:
    """Names of the bins the score compared, in the order of the counts."""
    if fb.kind == "numeric":
        edges = list(fb.edges)
        ranges = [f"{_short(lo)}..{_short(hi)}" for lo, hi in itertools.pairwise(edges)]
        ranges = ranges[: len(fb.counts)] + [""] * (len(fb.counts) - len(ranges))
        return [*ranges, "below range", "above range", "missing", "invalid"]
    return [*(str(v) for v in fb.values), "<other>", "<unseen>", "<missing>", "<invalid>"]


def _short(value: float) -> str:
    return f"{value:.4g}"


def _centers(fb: FeatureBaseline, w: NumericWindow) -> np.ndarray:
    if len(fb.edges) < 2:  # a baseline with no finite value: only the out-of-range bins
        return np.zeros(2)
    edges = np.asarray(fb.edges, dtype=float)
    mids = (edges[:-1] + edges[1:]) / 2.0
    if len(mids) >= 3:
        # the outer bins reach to the extremes, whose midpoints lie far out in the tails: place
        # them half a neighbouring width beyond their inner edge, nearer where their mass lies
        mids[0] = max(mids[0], edges[1] - (edges[2] - edges[1]) / 2.0)
        mids[-1] = min(mids[-1], edges[-2] + (edges[-2] - edges[-3]) / 2.0)
    below = w.below_mean if w.below_mean is not None and math.isfinite(w.below_mean) else edges[0]
    above = w.above_mean if w.above_mean is not None and math.isfinite(w.above_mean) else edges[-1]
    return np.asarray([*mids, below, above])


def _top_shift(
    fb: FeatureBaseline, base: np.ndarray, current: np.ndarray, w: CategoricalWindow
) -> dict[str, Any] | None:
    if not base.sum() or not current.sum():
        return None
    p, q = base / base.sum(), current / current.sum()
    i = int(np.argmax(np.abs(q - p)))
    labels = [*fb.values, "<other>", "<unseen>", "<missing>", "<invalid>"]
    value = labels[i]
    if value in ("<other>", "<unseen>") and len(w.examples) == 1:
        value = w.examples[0][0]
    return {"value": value, "baseline_share": _round(p[i]), "current_share": _round(q[i])}


def _anomalies(
    fb: FeatureBaseline,
    rows: int,
    present: int,
    same_type: int,
    other_types: int,
    types: dict[str, int],
    w: Any,
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def add(kind: str, share: float, detail: str) -> None:
        found.append({"feature": fb.name, "type": kind, "share": _round(share), "detail": detail})

    base_missing = fb.missing_share
    if present == 0:
        if rows * (1.0 - base_missing) >= 5:
            add(
                "missing_feature",
                1.0,
                f"no value in {rows} rows; the baseline has one in "
                f"{100 * (1 - base_missing):.1f}% of rows",
            )
        return found
    missing_share = max(rows - present, 0) / rows
    if missing_share > base_missing + _margin_of(base_missing, rows, MISSING_MARGIN):
        add(
            "completeness",
            missing_share,
            f"missing in {100 * missing_share:.1f}% of rows; "
            f"the baseline in {100 * base_missing:.1f}%",
        )
    if other_types / present > SMALL_SHARE:
        seen = ", ".join(
            f"{n} {t}" for t, n in sorted(types.items()) if t not in (fb.dtype, "null")
        )
        add("type_mismatch", other_types / present, f"{seen} values; the baseline has {fb.dtype}")
    if same_type == 0:
        return found
    non_finite = (w.nan + w.inf) if isinstance(w, NumericWindow) else w.non_finite
    base_share = fb.non_finite / max(fb.rows - fb.missing, 1)
    share = non_finite / same_type
    if non_finite and (
        fb.non_finite == 0 or share > base_share + _margin_of(base_share, same_type, 0.0)
    ):
        add(
            "non_finite",
            share,
            f"{non_finite} NaN or infinite values; the baseline has {100 * base_share:.2f}%",
        )
    if isinstance(w, NumericWindow) and fb.edges:
        far = w.far_below + w.far_above
        if far / same_type > SMALL_SHARE:
            add(
                "out_of_range",
                far / same_type,
                f"{w.far_below} values below {fb.edges[0]:.6g} and "
                f"{w.far_above} above {fb.edges[-1]:.6g}, by more than a tenth of the range",
            )
    if isinstance(w, CategoricalWindow) and fb.complete and w.outside / same_type > SMALL_SHARE:
        shown = ", ".join(repr(k) for k, _ in w.examples)
        add(
            "unseen_categories",
            w.outside / same_type,
            f"{w.outside_distinct} values the baseline never had, such as {shown}",
        )
    return found


def _margin_of(share: float, n: int, floor: float) -> float:
    """The floor plus four binomial standard errors, so that noise alone stays under it."""
    return floor + 4.0 * math.sqrt(max(share * (1.0 - share), 1.0 / max(n, 1)) / max(n, 1))


def _unexpected(
    role: str, section: dict[str, FeatureBaseline], types: dict, rows: int
) -> list[dict[str, Any]]:
    extra = []
    for (r, name), by_type in types.items():
        if r == role and name not in section:
            present = sum(n for t, n in by_type.items() if t != "null")
            if rows and present / rows > SMALL_SHARE:
                extra.append((present, name))
    extra.sort(key=lambda item: (-item[0], item[1]))
    what = "input feature" if role == "input" else "prediction output"
    found = [
        {
            "feature": name,
            "type": "unexpected_feature",
            "share": _round(n / rows),
            "detail": f"{what} not in the baseline, present in {n} of {rows} rows",
        }
        for n, name in extra[:MAX_UNEXPECTED]
    ]
    if len(extra) > MAX_UNEXPECTED:
        found.append(
            {
                "feature": None,
                "type": "unexpected_feature",
                "share": None,
                "detail": f"{len(extra) - MAX_UNEXPECTED} more {what}s not listed",
            }
        )
    return found


def _parse_anomaly(total: int, failed: int) -> list[dict[str, Any]]:
    if not total or failed / total <= SMALL_SHARE:
        return []
    return [
        {
            "feature": None,
            "type": "parse_error",
            "share": _round(failed / total),
            "detail": f"{failed} of {total} request bodies could not be parsed "
            "(not JSON, malformed, or of no known shape)",
        }
    ]


def _round(value: float) -> float:
    return round(float(value), 6)


def _iso(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
