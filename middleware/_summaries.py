"""Summaries: captured rows folded into per-minute rows that checks add up instead of reading rows.

:func:`fold_sql` is one SELECT that turns feature rows and request rows (the batch the writer
just inserted, or a span of the store) into rows of the ``summaries`` table (docs/summaries.md):
rows and requests per minute, values per (role, name, type) with their sum, sum of squares, min
and max, and, for the features of a baseline, counts on its bins and per category. Rows of the
same (model, baseline, role, name, what, key) merge by SUM of ``n``, ``total`` and ``squares``,
MIN of ``low`` and MAX of ``high`` (:data:`MERGE_SQL`), whichever minutes, steps or replicas
they come from. Feature names, edges and values always travel as bound parameters.
"""

# Every SQL text below is built from generated aliases and this module's constants.
# ruff: noqa: S608

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from ._baseline_file import Baseline, FeatureBaseline
from ._drift_window import NON_FINITE_KEYS, PARSE_FAILURES, range_margin
from ._summary_sql import VALUE_TYPES, bin_tree_sql, feature_key_sql

__all__ = [
    "GROUP_COLUMNS",
    "MAX_CATEGORIES",
    "MERGE_SQL",
    "SUMMARY_COLUMNS",
    "SummarySpec",
    "baseline_digest",
    "fold_sql",
    "summary_spec",
]

SUMMARY_COLUMNS = (
    "minute", "step_s", "model", "baseline", "role", "name", "what", "key",
    "n", "total", "squares", "low", "high",
)  # fmt: skip
"""The columns of a summary row, in table order."""
GROUP_COLUMNS = ("model", "baseline", "role", "name", "what", "key")
"""What a summary row counts; rows alike in these (and in time) merge into one."""
MERGE_SQL = (
    "sum(n)::BIGINT AS n, sum(total) AS total, sum(squares) AS squares, "
    "min(low) AS low, max(high) AS high"
)
"""The aggregates that merge summary rows: counts and sums add, extremes take min and max."""
MAX_CATEGORIES = 200
"""Most values outside a feature's baseline categories kept by name per step; the rest are
counted under a NULL key (its ``total`` counts their distinct values, an upper bound once
merged)."""


@dataclass(frozen=True, slots=True)
class SummarySpec:
    """What a baseline asks the fold to count: its bins and categories, and its digest."""

    digest: str
    numeric: tuple[FeatureBaseline, ...] = ()  # input features with edges
    categorical: tuple[FeatureBaseline, ...] = ()  # input features of a value type
    prediction: FeatureBaseline | None = None  # counted for every output name
    params: dict[str, Any] = field(default_factory=dict, compare=False)


def baseline_digest(baseline: Baseline | None) -> str:
    """A short digest of what a baseline's bins are: counts on its bins mean something only
    for those bins. Its counts, thresholds and methods do not enter: they change no bin."""
    if baseline is None:
        return ""
    parts = [
        [role, f.name, f.kind, f.dtype, list(f.edges), list(f.values)]
        for role, section in (("input", baseline.features), ("output", baseline.predictions))
        for f in section.values()
    ]
    return hashlib.sha256(orjson.dumps(parts)).hexdigest()[:16]


def summary_spec(baseline: Baseline | None) -> SummarySpec:
    """The fold's spec for ``baseline`` (None: row, request and type counts only)."""
    if baseline is None:
        return SummarySpec("")
    numeric = tuple(
        f for f in baseline.features.values() if f.kind == "numeric" and len(f.edges) >= 2
    )
    categorical = tuple(
        f for f in baseline.features.values() if f.kind == "categorical" and f.dtype in VALUE_TYPES
    )
    prediction = baseline.prediction
    if prediction is not None and not (
        (prediction.kind == "numeric" and len(prediction.edges) >= 2)
        or (prediction.kind == "categorical" and prediction.dtype in VALUE_TYPES)
    ):
        prediction = None
    return SummarySpec(baseline_digest(baseline), numeric, categorical, prediction)


def fold_sql(
    spec: SummarySpec,
    features: str,
    requests: str,
    *,
    model: str = "",
    prefix: str = "s",
) -> tuple[str, dict[str, Any]]:
    """A SELECT of summary rows (columns :data:`SUMMARY_COLUMNS`) of the rows of the relations
    ``features`` (columns of the ``features`` view) and ``requests``, with its parameters.

    ``model`` labels the rows; the relations must hold that scope's rows already. Parameter
    names start with ``prefix``, so that the SELECT can sit inside a larger query.
    """
    p: dict[str, Any] = {f"{prefix}_model": model, f"{prefix}_digest": spec.digest}
    head = (
        f"date_trunc('minute', f.ts) AS minute, 60 AS step_s, ${prefix}_model AS model, "
        f"${prefix}_digest AS baseline"
    )
    finite = "f.type = 'number' AND isfinite(f.num)"
    parts = [
        # rows per role: a (request, row) counted once, as the raw check does
        f"""SELECT {head}, f.role AS role, '' AS name, 'rows' AS what, '' AS key,
               count(DISTINCT hash(f.request_id, f.row_index)) AS n, NULL::DOUBLE AS total,
               NULL::DOUBLE AS squares, NULL::DOUBLE AS low, NULL::DOUBLE AS high
            FROM {features} f GROUP BY ALL""",
        f"""SELECT {head}, f.role, f.name, 'type', f.type, count(*),
               sum(f.num) FILTER ({finite}), sum(f.num * f.num) FILTER ({finite}),
               min(f.num) FILTER ({finite}), max(f.num) FILTER ({finite})
            FROM {features} f GROUP BY ALL""",
        f"""SELECT {head}, f.role, f.name, 'non_finite', '', count(*),
               NULL::DOUBLE, NULL::DOUBLE, NULL::DOUBLE, NULL::DOUBLE
            FROM {features} f WHERE f.type = 'number' AND NOT isfinite(f.num) GROUP BY ALL""",
        # the evaluation and the prediction's choice ask whether an output is whole numbers
        f"""SELECT {head}, f.role, f.name, 'fraction', '', count(*),
               NULL::DOUBLE, NULL::DOUBLE, NULL::DOUBLE, NULL::DOUBLE
            FROM {features} f WHERE f.role = 'output' AND {finite} AND f.num <> trunc(f.num)
            GROUP BY ALL""",
        f"""SELECT date_trunc('minute', r.ts), 60, ${prefix}_model, ${prefix}_digest, 'request',
               '', 'requests', '', count(*), NULL::DOUBLE, NULL::DOUBLE, NULL::DOUBLE,
               NULL::DOUBLE
            FROM {requests} r GROUP BY ALL""",
        f"""SELECT date_trunc('minute', r.ts), 60, ${prefix}_model, ${prefix}_digest, 'request',
               '', 'parse_failures', '', count(*), NULL::DOUBLE, NULL::DOUBLE, NULL::DOUBLE,
               NULL::DOUBLE
            FROM {requests} r
            WHERE r.input_status IN (SELECT unnest(${prefix}_failures::VARCHAR[]))
            GROUP BY ALL""",
    ]
    p[f"{prefix}_failures"] = list(PARSE_FAILURES)
    if spec.numeric:
        parts.append(_bins(spec.numeric, features, head, "input", f"{prefix}_in", p))
    if spec.categorical:
        parts.append(_categories(spec.categorical, features, head, "input", f"{prefix}_ic", p))
    if spec.prediction is not None and spec.prediction.kind == "numeric":
        parts.append(_bins([spec.prediction], features, head, "output", f"{prefix}_on", p))
    elif spec.prediction is not None:
        parts.append(_categories([spec.prediction], features, head, "output", f"{prefix}_oc", p))
    return "\nUNION ALL\n".join(f"({part})" for part in parts), p


def _bins(
    features: Sequence[FeatureBaseline],
    source: str,
    head: str,
    role: str,
    prefix: str,
    p: dict[str, Any],
) -> str:
    """Counts and sums by bin code, the codes of ``numeric_counts`` (one prediction: of every
    output name)."""
    width = max(len(f.edges) for f in features) - 1
    p[f"{prefix}_names"] = [f.name for f in features]
    p[f"{prefix}_lo"] = [f.edges[0] - range_margin(f) for f in features]
    p[f"{prefix}_hi"] = [f.edges[-1] + range_margin(f) for f in features]
    for j in range(width + 1):
        p[f"{prefix}_e{j}"] = [f.edges[min(j, len(f.edges) - 1)] for f in features]
    columns = "".join(f", unnest(${prefix}_e{j}::DOUBLE[]) AS e{j}" for j in range(width + 1))
    tests = [f"f.num < s.e{j}" for j in range(width)] + [f"f.num <= s.e{width}"]
    below = "CASE WHEN f.num = '-inf'::DOUBLE THEN -7 WHEN f.num < s.lo_m THEN -2 ELSE -1 END"
    above = (
        "CASE WHEN isnan(f.num) THEN -5 WHEN f.num = 'inf'::DOUBLE THEN -6 "
        "WHEN f.num > s.hi_m THEN -4 ELSE -3 END"
    )
    leaves = {0: below, width + 1: above}
    tree = bin_tree_sql(tests, lambda r: leaves.get(r, str(r - 1)))
    join = "s.name = f.name" if role == "input" else "true"
    return f"""
        WITH spec AS (SELECT unnest(${prefix}_names::VARCHAR[]) AS name,
                             unnest(${prefix}_lo::DOUBLE[]) AS lo_m,
                             unnest(${prefix}_hi::DOUBLE[]) AS hi_m {columns})
        SELECT {head}, '{role}', f.name, 'bin', ({tree})::VARCHAR, count(*), sum(f.num),
               NULL::DOUBLE, NULL::DOUBLE, NULL::DOUBLE
        FROM {source} f JOIN spec s ON {join}
        WHERE f.role = '{role}' AND f.type = 'number'
        GROUP BY ALL"""


def _categories(
    features: Sequence[FeatureBaseline],
    source: str,
    head: str,
    role: str,
    prefix: str,
    p: dict[str, Any],
) -> str:
    """Counts per category key of the values of each feature's type: every baseline category,
    and the :data:`MAX_CATEGORIES` most frequent others (the rest under a NULL key)."""
    dids, keys = [], []
    for i, f in enumerate(features):
        dids += [i] * len(f.values)
        keys += list(f.values)
    dtypes = [t for t in VALUE_TYPES if any(f.dtype == t for f in features)]
    p[f"{prefix}_names"] = [f.name for f in features]
    p[f"{prefix}_ids"] = list(range(len(features)))
    p[f"{prefix}_dtypes"] = [f.dtype for f in features]
    p[f"{prefix}_dids"] = dids
    p[f"{prefix}_dkeys"] = keys
    p[f"{prefix}_nf"] = list(NON_FINITE_KEYS)
    of_type = f"f.type IN ({', '.join(repr(t) for t in dtypes)})"
    join = "s.name = f.name AND s.dtype = f.type" if role == "input" else "s.dtype = f.type"
    # NaN and infinity of a number feature are kept by name: the check tells them apart
    return f"""
        WITH spec AS (SELECT unnest(${prefix}_names::VARCHAR[]) AS sname,
                             unnest(${prefix}_ids::UINTEGER[]) AS id,
                             unnest(${prefix}_dtypes::VARCHAR[]) AS dtype),
        domain AS (SELECT unnest(${prefix}_dids::UINTEGER[]) AS id,
                          unnest(${prefix}_dkeys::VARCHAR[]) AS key),
        agg AS (
            SELECT {head}, f.name, s.id, {feature_key_sql("f", dtypes)} AS key, count(*) AS n
            FROM {source} f JOIN spec s ON {join.replace("s.name", "s.sname")}
            WHERE f.role = '{role}' AND {of_type}
            GROUP BY ALL),
        ranked AS (
            SELECT a.*, d.key IS NOT NULL AS listed,
                   d.key IS NOT NULL OR a.key IN (SELECT unnest(${prefix}_nf::VARCHAR[]))
                   OR row_number() OVER (PARTITION BY a.minute, a.name, d.key IS NULL
                                         ORDER BY a.n DESC, a.key) <= {MAX_CATEGORIES} AS kept
            FROM agg a LEFT JOIN domain d ON d.id = a.id AND d.key = a.key)
        SELECT minute, step_s, model, baseline, '{role}', name,
               CASE WHEN listed THEN 'category' ELSE 'other' END,
               CASE WHEN kept THEN key END, sum(n)::BIGINT,
               CASE WHEN NOT kept THEN count(*)::DOUBLE END, NULL::DOUBLE, NULL::DOUBLE,
               NULL::DOUBLE
        FROM ranked GROUP BY minute, step_s, model, baseline, name, listed, kept,
                             CASE WHEN kept THEN key END"""
