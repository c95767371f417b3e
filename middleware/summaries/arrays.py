"""The writer's fold of one batch with NumPy, from the arrays it has just inserted.

The same summary rows as ``fold_sql`` (tests compare them on the same rows), without a query
over the batch: one DuckDB aggregate per batch was tried and not kept (41 ms for a batch of
8,000 rows of 11 values, against 23 ms here). The counts are ``bincount``s over integer group
keys, the bins a ``searchsorted`` per feature with the SQL's exact tests, and category keys as
``number_key_sql`` writes them (DuckDB itself spells the rare non-integer numbers).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

import duckdb
import numpy as np

from ..baseline.file import FeatureBaseline
from ..baseline.window import NON_FINITE_KEYS, PARSE_FAILURES, range_margin
from .spec import MAX_CATEGORIES, SummarySpec

__all__ = ["fold_arrays"]

Column = tuple[str, str, str, str | None]  # role, name, type, model
_TYPES = ("number", "boolean", "string", "null")


def fold_arrays(
    cursor: duckdb.DuckDBPyConnection,
    spec: SummarySpec,
    values: Mapping[str, np.ndarray] | None,
    requests: Mapping[str, np.ndarray],
    columns: Mapping[int, Column],
    model: str | None,
) -> list[tuple]:
    """Summary rows (minute, role, name, what, key, n[, total, squares, low, high]) of the
    batch's ``values`` and ``requests`` in the scope of ``model`` (None: every request)."""
    out: list[tuple] = []
    asked = requests["ts"]
    if model is not None:
        asked = asked[requests["model"] == model]
    failed = np.isin(requests["input_status"], PARSE_FAILURES)
    if model is not None:
        failed = failed[requests["model"] == model]
    for minute, n in zip(
        *np.unique(asked.astype("datetime64[m]"), return_counts=True), strict=True
    ):
        out.append((_py(minute), "request", "", "requests", "", int(n)))
    bad = asked[failed].astype("datetime64[m]")
    for minute, n in zip(*np.unique(bad, return_counts=True), strict=True):
        out.append((_py(minute), "request", "", "parse_failures", "", int(n)))
    if values is None or not len(values["column_id"]):
        return out
    col = values["column_id"].astype(np.int64)
    keep = None
    if model is not None:
        mine = np.fromiter((i for i, c in columns.items() if c[3] == model), np.int64)
        keep = np.isin(col, mine)
        col = col[keep]
        if not len(col):
            return out
    pick = (lambda a: a) if keep is None else (lambda a: a[keep])
    num, row = pick(values["num"]), pick(values["row"])
    minutes, index = _minutes(pick(values["ts"]))
    stamps = [_py(m) for m in minutes]
    kind = col // 2 % 4
    number = kind == 0
    finite = number & np.isfinite(num)
    out += _types(stamps, index, col, num, number, finite, columns)
    # rows per role: a row's values lie side by side, all of one role and one minute
    first = np.ones(len(row), dtype=bool)
    first[1:] = row[1:] != row[:-1]
    per = np.bincount(index[first] * 2 + col[first] % 2)
    for key in np.flatnonzero(per).tolist():
        role = "input" if key % 2 == 0 else "output"
        out.append((stamps[key // 2], role, "", "rows", "", int(per[key])))
    groups = [("input", spec.numeric)]
    if spec.prediction is not None and spec.prediction.kind == "numeric":
        groups.append(("output", (spec.prediction,)))
    for role, group in groups:
        if group:
            out += _bins(role, group, stamps, index, col, num, columns)
    categorical = [("input", f) for f in spec.categorical]
    if spec.prediction is not None and spec.prediction.kind == "categorical":
        categorical.append(("output", spec.prediction))
    for role, f in categorical:
        out += _categories(cursor, role, f, stamps, index, col, num, pick(values["str"]), columns)
    return out


def _minutes(ts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The minutes of ``ts`` (a range from the first, sorting only when it is long) and each
    value's index into them."""
    minutes = ts.astype("datetime64[m]")
    first = minutes.min()
    index = (minutes - first).astype(np.int64)
    if index.max() < 1_440:  # a batch spans a minute or two, unless the clock stepped
        return first + np.arange(index.max() + 1), index
    return np.unique(minutes, return_inverse=True)


def _py(moment: np.datetime64) -> Any:
    return moment.astype("datetime64[us]").item()


def _types(
    stamps: list, index: np.ndarray, col: np.ndarray, num: np.ndarray, number: np.ndarray,
    finite: np.ndarray, columns: Mapping[int, Column],
) -> list[tuple]:  # fmt: skip
    """Values per column and type: count, sums and extremes of finite numbers, non-finite and
    non-whole output numbers."""
    span = int(col.max()) + 1
    where = index * span + col
    size = int(where.max()) + 1
    n = np.bincount(where, minlength=size)
    x = num[finite]
    at = where[finite]
    total = np.bincount(at, x, minlength=size)
    squares = np.bincount(at, x * x, minlength=size)
    seen = np.bincount(at, minlength=size)
    low = np.full(size, np.inf)
    high = np.full(size, -np.inf)
    np.minimum.at(low, at, x)
    np.maximum.at(high, at, x)
    bad = np.bincount(where[number & ~np.isfinite(num)], minlength=size)
    broken = np.zeros(len(num), dtype=bool)
    broken[finite] = x != np.trunc(x)
    fraction = np.bincount(where[broken & (col % 2 == 1)], minlength=size)
    out = []
    for i in np.flatnonzero(n).tolist():
        role, name, kind, _ = columns[i % span]
        stamp = stamps[i // span]
        if seen[i]:
            stats = (float(total[i]), float(squares[i]), float(low[i]), float(high[i]))
        else:
            stats = (None, None, None, None)
        out.append((stamp, role, name, "type", kind, int(n[i]), *stats))
        if bad[i]:
            out.append((stamp, role, name, "non_finite", "", int(bad[i])))
        if fraction[i]:
            out.append((stamp, role, name, "fraction", "", int(fraction[i])))
    return out


def _ids(columns: Mapping[int, Column], role: str, f: FeatureBaseline, kind: str) -> list[int]:
    """The columns a feature's counts are of: an input's own, the prediction's every output's."""
    return [
        i
        for i, (r, name, t, _) in columns.items()
        if r == role and t == kind and (role == "output" or name == f.name)
    ]


def _bins(
    role: str, group: tuple[FeatureBaseline, ...], stamps: list, index: np.ndarray, col: np.ndarray,
    num: np.ndarray, columns: Mapping[int, Column],
) -> list[tuple]:  # fmt: skip
    """Counts and sums by bin code, the codes of ``numeric_counts`` with the edges of the
    group's widest feature (a narrower one's max repeated, as the SQL pads them)."""
    width = max(len(f.edges) for f in group) - 1
    out = []
    for f in group:
        ids = _ids(columns, role, f, "number")
        if not ids:
            continue
        e = np.asarray([f.edges[min(j, len(f.edges) - 1)] for j in range(width + 1)])
        lo, hi = f.edges[0] - range_margin(f), f.edges[-1] + range_margin(f)
        for cid in ids:
            mask = col == cid
            if not mask.any():
                continue
            x, at = num[mask], index[mask]
            r = np.searchsorted(e[:width], x, side="right")
            r[(r == width) & ~(x <= e[width])] = width + 1
            code = r - 1
            below, above = r == 0, r == width + 1
            code[below] = np.where(x[below] == -np.inf, -7, np.where(x[below] < lo, -2, -1))
            xa = x[above]
            code[above] = np.where(
                np.isnan(xa), -5, np.where(xa == np.inf, -6, np.where(xa > hi, -4, -3))
            )
            fin = np.isfinite(x)
            where = at * (width + 8) + code + 7
            size = int(where.max()) + 1
            n = np.bincount(where, minlength=size)
            sums = np.bincount(where[fin], x[fin], minlength=size)
            any_finite = np.bincount(where[fin], minlength=size)
            name = columns[cid][1]
            for k in np.flatnonzero(n).tolist():
                i = k
                total = float(sums[i]) if any_finite[i] else None
                c = k % (width + 8) - 7
                out.append((stamps[k // (width + 8)], role, name, "bin", str(c), int(n[i]), total))
    return out


def _categories(
    cursor: duckdb.DuckDBPyConnection, role: str, f: FeatureBaseline, stamps: list,
    index: np.ndarray, col: np.ndarray, num: np.ndarray, text: np.ndarray,
    columns: Mapping[int, Column],
) -> list[tuple]:  # fmt: skip
    """Counts per category key of the feature's type: the baseline's categories, the
    :data:`MAX_CATEGORIES` most frequent others per minute, the rest under a NULL key."""
    out = []
    listed = set(f.values)
    counts: dict[tuple[int, str], Counter] = defaultdict(Counter)
    for cid in _ids(columns, role, f, f.dtype):
        mask = col == cid
        if not mask.any():
            continue
        name = columns[cid][1]
        keys, at = _keys(cursor, f.dtype, num[mask], text[mask]), index[mask]
        if at[0] == at[-1] and (at == at[0]).all():  # one minute, as most batches are
            counts[int(at[0]), name].update(keys)
            continue
        for m in np.unique(at).tolist():
            counts[m, name].update(k for k, here in zip(keys, at == m, strict=True) if here)
    for (m, name), found in counts.items():
        others = []
        for key, n in found.items():
            if key in listed:
                out.append((stamps[m], role, name, "category", key, n))
            else:
                others.append((key, n))
        others.sort(key=lambda item: (-item[1], item[0]))
        kept = others[:MAX_CATEGORIES] + [
            o for o in others[MAX_CATEGORIES:] if o[0] in NON_FINITE_KEYS
        ]
        out += [(stamps[m], role, name, "other", key, n) for key, n in kept]
        dropped = [o for o in others[MAX_CATEGORIES:] if o[0] not in NON_FINITE_KEYS]
        if dropped:
            count = sum(n for _, n in dropped)
            out.append((stamps[m], role, name, "other", None, count, float(len(dropped))))
    return out


def _keys(
    cursor: duckdb.DuckDBPyConnection, dtype: str, num: np.ndarray, text: np.ndarray
) -> list[str]:
    """Category keys as ``feature_key_sql`` makes them."""
    if dtype == "string":
        return text.tolist()
    if dtype == "boolean":
        return np.where(num == 1, "true", "false").tolist()
    whole = np.isfinite(num) & (num == np.trunc(num)) & (np.abs(num) < 1e15)
    keys = np.empty(len(num), dtype=object)
    keys[whole] = [str(v) for v in num[whole].astype(np.int64).tolist()]
    rest = ~whole
    if rest.any():  # DuckDB's own text of a double (nan, inf, 0.30000000000000004)
        spelled = cursor.execute(
            "SELECT CAST(v AS VARCHAR) FROM (SELECT unnest($v::DOUBLE[]) AS v)",
            {"v": num[rest].tolist()},
        ).fetchall()
        keys[rest] = [s for (s,) in spelled]
    return keys.tolist()
