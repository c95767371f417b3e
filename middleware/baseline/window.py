"""One window of the log store, summarized inside DuckDB for the skew check.

Every figure comes from a few aggregate queries over the long ``features`` table: instance rows
per role, numeric values binned against the baseline's edges, categorical values counted per
baseline category, and values per (role, name, type) where the others do not account for every
value. Feature names, edges and domain values travel as bound parameters (lists unnested into
small tables joined by name), never as SQL text; Python sees only counts.
"""

# Every SQL text below is built from generated aliases and this module's constants; feature
# names, edges and values are always bound parameters.
# ruff: noqa: S608

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from ..stats.summary_sql import VALUE_TYPES, bin_tree_sql, feature_key_sql
from .file import FeatureBaseline

__all__ = [
    "NON_FINITE_KEYS",
    "PARSE_FAILURES",
    "RANGE_MARGIN",
    "CategoricalWindow",
    "NumericWindow",
    "bin_code_sql",
    "categorical_counts",
    "edge_columns",
    "edge_params",
    "numeric_counts",
    "parse_failures",
    "range_margin",
    "type_counts",
    "values_per_role",
    "window_rows",
]

PARSE_FAILURES = ("parse_error", "not_json", "unknown_shape")
RANGE_MARGIN = 0.1  # out_of_range: beyond min or max by a tenth of the baseline's range
NON_FINITE_KEYS = ("nan", "inf", "-inf")

_WINDOW = "f.ts >= $start AND f.ts < $end AND f.role = $role"


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

    @property
    def values(self) -> int:
        """Every number-typed value counted, in range or not."""
        return int(self.counts.sum()) + self.below + self.above + self.nan + self.inf


@dataclass(slots=True)
class CategoricalWindow:
    """A categorical feature's values of its baseline type, by baseline category."""

    counts: np.ndarray
    outside: int = 0  # values not in the baseline's list
    outside_distinct: int = 0
    examples: list[tuple[str, int]] = field(default_factory=list)
    non_finite: int = 0  # NaN and infinity of a number-typed feature, when not in its domain

    @property
    def values(self) -> int:
        """Every value of the feature's type counted, listed in the baseline or not."""
        return int(self.counts.sum()) + self.outside + self.non_finite


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


def values_per_role(cursor: Any, start: datetime, end: datetime) -> dict[str, int]:
    """Stored values other than nulls (rows of ``features``) per role in [start, end)."""
    # one count per role, with the role and type constants: the filters run in the table scan
    sql = """
        SELECT (SELECT count(*) FROM features f WHERE f.ts >= $start AND f.ts < $end
                AND f.role = 'input' AND f.type <> 'null'),
               (SELECT count(*) FROM features f WHERE f.ts >= $start AND f.ts < $end
                AND f.role = 'output' AND f.type <> 'null')
    """
    inputs, outputs = cursor.execute(sql, {"start": start, "end": end}).fetchone()
    return {"input": int(inputs), "output": int(outputs)}


def range_margin(f: FeatureBaseline) -> float:
    """How far beyond the baseline's min or max a value is ``out_of_range``."""
    spread = f.edges[-1] - f.edges[0]
    return RANGE_MARGIN * (spread if spread > 0 else max(abs(f.edges[0]), 1e-9))


def edge_params(
    features: Sequence[FeatureBaseline], width: int, prefix: str = ""
) -> dict[str, list[float]]:
    """Bound lists of each feature's range margins (``lo_m``, ``hi_m``) and edges (``e0``..)
    that :func:`bin_code_sql` tests against, ``width`` the most bins of any feature."""
    params = {
        f"{prefix}lo_m": [f.edges[0] - range_margin(f) for f in features],
        f"{prefix}hi_m": [f.edges[-1] + range_margin(f) for f in features],
    }
    # e0 = min, e1.. inner edges, then max repeated: a feature with fewer bins than the widest
    # ends in "x < max" tests, and its values equal to max land past its last bin (clamped below)
    for j in range(width + 1):
        params[f"{prefix}e{j}"] = [f.edges[min(j, len(f.edges) - 1)] for f in features]
    return params


def edge_columns(width: int, prefix: str = "") -> str:
    """The edge lists of :func:`edge_params` unnested as columns ``e0``.. of a spec table."""
    return "".join(f", unnest(${prefix}e{j}::DOUBLE[]) AS e{j}" for j in range(width + 1))


def bin_code_sql(value: str, width: int) -> str:
    """SQL for the bin code of ``value`` against the spec table ``s`` (docs/summaries.md): 0..
    the bins, -1 below the range (-2 by more than its margin), -3 above (-4), -5 NaN, -6 +inf,
    -7 -inf."""
    tests = [f"{value} < s.e{j}" for j in range(width)] + [f"{value} <= s.e{width}"]
    below = f"CASE WHEN {value} = '-inf'::DOUBLE THEN -7 WHEN {value} < s.lo_m THEN -2 ELSE -1 END"
    above = (
        f"CASE WHEN isnan({value}) THEN -5 WHEN {value} = 'inf'::DOUBLE THEN -6 "
        f"WHEN {value} > s.hi_m THEN -4 ELSE -3 END"
    )
    # leaves: 0 is below min, j is bin j - 1, width + 1 is above max (or NaN)
    leaves = {0: below, width + 1: above}
    return bin_tree_sql(tests, lambda r: leaves.get(r, str(r - 1)))


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
    params["ids"] = list(range(len(features)))
    params |= edge_params(features, width)
    columns = edge_columns(width)
    tree = bin_code_sql("f.num", width)
    # "id % n" is id itself (ids run from 0 to n - 1), but it tells DuckDB the range of the
    # group keys: it then counts in a perfect hash table, in half the time of hashing names.
    sql = f"""
        WITH spec AS (
            SELECT unnest($names::VARCHAR[]) AS name, unnest($ids::UINTEGER[]) AS id,
                   unnest($lo_m::DOUBLE[]) AS lo_m, unnest($hi_m::DOUBLE[]) AS hi_m {columns})
        SELECT (s.id % {len(features)})::UINTEGER AS id, {tree} AS b, count(*), sum(f.num)
        FROM features f JOIN spec s ON s.name = f.name
        WHERE {_WINDOW} AND f.type = 'number'
        GROUP BY ALL
    """
    result = [NumericWindow(np.zeros(len(f.edges) - 1)) for f in features]
    for i, code, count, total in cursor.execute(sql, params).fetchall():
        w = result[i]
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
    return {f.name: w for f, w in zip(features, result, strict=True)}


def _merge_mean(mean: float | None, before: int, total: float, count: int) -> float:
    return (total if mean is None else mean * before + total) / (before + count)


def categorical_counts(
    cursor: Any,
    role: str,
    features: Sequence[FeatureBaseline],
    start: datetime,
    end: datetime,
) -> dict[str, CategoricalWindow]:
    """Count the values of ``features`` per baseline category; values of other types are left
    to the type counts, so that a type mismatch never reads as an unseen category too."""
    features = [f for f in features if f.dtype in VALUE_TYPES]
    if not features:
        return {}
    dids, keys, index = [], [], []
    for i, f in enumerate(features):
        dids += [i] * len(f.values)
        keys += list(f.values)
        index += range(len(f.values))
    # the types as a constant list (from VALUE_TYPES, never from the baseline) become a filter
    # inside the table scan; with one type, the join needs the name only
    dtypes = [t for t in VALUE_TYPES if any(f.dtype == t for f in features)]
    of_type = f"f.type IN ({', '.join(repr(t) for t in dtypes)})"
    join = "s.name = f.name" + ("" if len(dtypes) == 1 else " AND s.dtype = f.type")
    sql = f"""
        WITH spec AS (SELECT unnest($names::VARCHAR[]) AS name, unnest($ids::UINTEGER[]) AS id,
                             unnest($dtypes::VARCHAR[]) AS dtype),
        domain AS (SELECT unnest($dids::UINTEGER[]) AS id, unnest($dkeys::VARCHAR[]) AS key,
                          unnest($didx::INTEGER[]) AS idx),
        agg AS (
            SELECT s.id, {feature_key_sql("f", dtypes)} AS key, count(*) AS n
            FROM features f JOIN spec s ON {join}
            WHERE {_WINDOW} AND {of_type}
            GROUP BY ALL)
        SELECT a.id, d.idx, sum(a.n), count(*),
               sum(a.n) FILTER (a.key IN (SELECT unnest($non_finite::VARCHAR[]))),
               count(*) FILTER (a.key IN (SELECT unnest($non_finite::VARCHAR[]))),
               max_by({{'key': a.key, 'n': a.n}}, a.n, 5)
        FROM agg a LEFT JOIN domain d ON d.id = a.id AND d.key = a.key
        GROUP BY ALL
    """
    params = {
        "start": start,
        "end": end,
        "role": role,
        "names": [f.name for f in features],
        "ids": list(range(len(features))),
        "dtypes": [f.dtype for f in features],
        "dids": dids,
        "dkeys": keys,
        "didx": index,
        "non_finite": list(NON_FINITE_KEYS),
    }
    result = [CategoricalWindow(np.zeros(len(f.values))) for f in features]
    found = cursor.execute(sql, params).fetchall()
    for i, idx, count, distinct, non_finite, non_finite_keys, top in found:
        w = result[i]
        if idx is not None:
            w.counts[idx] += count
            continue
        # NaN and infinity outside the domain are non-finite values, not unseen categories
        numbers = features[i].dtype == "number"
        w.non_finite = int(non_finite or 0) if numbers else 0
        w.outside = int(count) - w.non_finite
        w.outside_distinct = int(distinct) - (int(non_finite_keys or 0) if numbers else 0)
        w.examples = [
            (item["key"], int(item["n"]))
            for item in top
            if not (numbers and item["key"] in NON_FINITE_KEYS)
        ][:3]
    return {f.name: w for f, w in zip(features, result, strict=True)}


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
