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

from ..baseline.file import Baseline, FeatureBaseline
from ..baseline.window import (
    NON_FINITE_KEYS,
    PARSE_FAILURES,
    bin_code_sql,
    edge_columns,
    edge_params,
)
from ..stats.summary_sql import VALUE_TYPES, number_key_sql

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
    values: str,
    columns: str,
    requests: str,
    *,
    model: str = "",
    prefix: str = "s",
    row_key: str = "hash(v.request_id, v.row_index)",
) -> tuple[str, dict[str, Any]]:
    """A SELECT of summary rows (columns :data:`SUMMARY_COLUMNS`) with its parameters, of the
    relations ``values`` (columns of ``feature_values``), ``columns`` (``feature_columns``: what
    each column id is) and ``requests``.

    ``model`` labels the rows; the relations must hold that scope's rows already. Parameter
    names start with ``prefix``, so that the SELECT can sit inside a larger query. Everything
    is grouped by column id first and named after: grouping by names costs several times more.
    ``row_key`` tells the rows apart (the writer's batch numbers them).
    """
    p: dict[str, Any] = {f"{prefix}_model": model, f"{prefix}_digest": spec.digest}
    p[f"{prefix}_failures"] = list(PARSE_FAILURES)
    scope = f"60 AS step_s, ${prefix}_model AS model, ${prefix}_digest AS baseline"
    number = "v.column_id // 2 % 4 = 0"  # the type code of numbers (``_schema.TYPE_CODES``)
    finite = f"{number} AND isfinite(v.num)"
    # one pass over the values: per minute and column, counts, sums and extremes
    typed = f"""t AS MATERIALIZED (
        SELECT date_trunc('minute', v.ts) AS minute, v.column_id AS id, count(*) AS n,
               sum(v.num) FILTER ({finite}) AS total,
               sum(v.num * v.num) FILTER ({finite}) AS squares,
               min(v.num) FILTER ({finite}) AS low, max(v.num) FILTER ({finite}) AS high,
               count(*) FILTER ({number} AND NOT isfinite(v.num)) AS bad,
               count(*) FILTER ({finite} AND v.column_id % 2 = 1 AND v.num <> trunc(v.num))
                   AS fraction
        FROM {values} v GROUP BY ALL)"""
    parts = [
        # rows per role: a (request, row) counted once, as the raw check does
        f"""SELECT date_trunc('minute', v.ts) AS minute, {scope},
               CASE WHEN v.column_id % 2 = 0 THEN 'input' ELSE 'output' END AS role,
               '' AS name, 'rows' AS what, '' AS key,
               count(DISTINCT {row_key}) AS n, NULL::DOUBLE AS total,
               NULL::DOUBLE AS squares, NULL::DOUBLE AS low, NULL::DOUBLE AS high
            FROM {values} v GROUP BY date_trunc('minute', v.ts), v.column_id % 2""",
        f"""SELECT t.minute, {scope}, c.role, c.name, 'type', c.type, t.n, t.total, t.squares,
               t.low, t.high
            FROM t JOIN {columns} c ON c.id = t.id""",
        f"""SELECT t.minute, {scope}, c.role, c.name, 'non_finite', '', t.bad, NULL, NULL,
               NULL, NULL
            FROM t JOIN {columns} c ON c.id = t.id WHERE t.bad > 0""",
        # the evaluation and the prediction's choice ask whether an output is whole numbers
        f"""SELECT t.minute, {scope}, c.role, c.name, 'fraction', '', t.fraction, NULL, NULL,
               NULL, NULL
            FROM t JOIN {columns} c ON c.id = t.id WHERE t.fraction > 0""",
        f"""SELECT date_trunc('minute', r.ts), {scope}, 'request', '', 'requests', '', count(*),
               NULL, NULL, NULL, NULL
            FROM {requests} r GROUP BY ALL""",
        f"""SELECT date_trunc('minute', r.ts), {scope}, 'request', '', 'parse_failures', '',
               count(*), NULL, NULL, NULL, NULL
            FROM {requests} r
            WHERE r.input_status IN (SELECT unnest(${prefix}_failures::VARCHAR[]))
            GROUP BY ALL""",
    ]
    where = (values, columns, scope)
    if spec.numeric:
        parts.append(_bins(spec.numeric, where, "input", f"{prefix}_in", p))
    if spec.categorical:
        parts.append(_categories(spec.categorical, where, "input", f"{prefix}_ic", p))
    if spec.prediction is not None and spec.prediction.kind == "numeric":
        parts.append(_bins([spec.prediction], where, "output", f"{prefix}_on", p))
    elif spec.prediction is not None:
        parts.append(_categories([spec.prediction], where, "output", f"{prefix}_oc", p))
    body = "\nUNION ALL\n".join(f"({part})" for part in parts)
    return f"WITH {typed}\n{body}", p


def _bins(
    features: Sequence[FeatureBaseline],
    where: tuple[str, str, str],
    role: str,
    prefix: str,
    p: dict[str, Any],
) -> str:
    """Counts and sums by bin code, the codes of ``numeric_counts`` (one prediction: of every
    output name)."""
    values, columns, scope = where
    width = max(len(f.edges) for f in features) - 1
    p[f"{prefix}_names"] = [f.name for f in features]
    p |= edge_params(features, width, f"{prefix}_")
    edges = edge_columns(width, f"{prefix}_")
    tree = bin_code_sql("v.num", width)
    named = "c.name = s.name AND " if role == "input" else ""
    return f"""
        WITH spec AS (SELECT unnest(${prefix}_names::VARCHAR[]) AS name,
                             unnest(${prefix}_lo_m::DOUBLE[]) AS lo_m,
                             unnest(${prefix}_hi_m::DOUBLE[]) AS hi_m {edges}),
        ids AS (SELECT c.id, s.* EXCLUDE (name) FROM spec s JOIN {columns} c
                ON {named}c.role = '{role}' AND c.type = 'number'),
        agg AS (SELECT date_trunc('minute', v.ts) AS minute, s.id, {tree} AS code,
                       count(*) AS n,
                       sum(CASE WHEN isfinite(v.num) THEN v.num END) AS total
                FROM {values} v JOIN ids s ON s.id = v.column_id GROUP BY ALL)
        SELECT a.minute, {scope}, '{role}', c.name, 'bin', a.code::VARCHAR, a.n, a.total,
               NULL, NULL, NULL
        FROM agg a JOIN {columns} c ON c.id = a.id"""


def _categories(
    features: Sequence[FeatureBaseline],
    where: tuple[str, str, str],
    role: str,
    prefix: str,
    p: dict[str, Any],
) -> str:
    """Counts per category key of the values of each feature's type: every baseline category,
    and the :data:`MAX_CATEGORIES` most frequent others (the rest under a NULL key)."""
    values, columns, scope = where
    dids, keys = [], []
    for i, f in enumerate(features):
        dids += [i] * len(f.values)
        keys += list(f.values)
    p[f"{prefix}_names"] = [f.name for f in features]
    p[f"{prefix}_ids"] = list(range(len(features)))
    p[f"{prefix}_dtypes"] = [f.dtype for f in features]
    p[f"{prefix}_dids"] = dids
    p[f"{prefix}_dkeys"] = keys
    p[f"{prefix}_nf"] = list(NON_FINITE_KEYS)
    named = "c.name = s.sname AND " if role == "input" else ""
    # keys as ``feature_key_sql`` makes them, from the column's type code
    key = (
        "CASE v.column_id // 2 % 4 WHEN 2 THEN v.str "
        "WHEN 1 THEN CASE WHEN v.num = 1 THEN 'true' ELSE 'false' END "
        f"ELSE {number_key_sql('v.num')} END"
    )
    # NaN and infinity of a number feature are kept by name: the check tells them apart
    return f"""
        WITH spec AS (SELECT unnest(${prefix}_names::VARCHAR[]) AS sname,
                             unnest(${prefix}_ids::UINTEGER[]) AS fid,
                             unnest(${prefix}_dtypes::VARCHAR[]) AS dtype),
        ids AS (SELECT c.id, s.fid FROM spec s JOIN {columns} c
                ON {named}c.role = '{role}' AND c.type = s.dtype),
        domain AS (SELECT unnest(${prefix}_dids::UINTEGER[]) AS fid,
                          unnest(${prefix}_dkeys::VARCHAR[]) AS key),
        agg AS (
            SELECT date_trunc('minute', v.ts) AS minute, s.id, s.fid, {key} AS key,
                   count(*) AS n
            FROM {values} v JOIN ids s ON s.id = v.column_id
            GROUP BY ALL),
        named AS (
            SELECT a.minute, c.name, a.fid, a.key, sum(a.n) AS n
            FROM agg a JOIN {columns} c ON c.id = a.id GROUP BY ALL),
        ranked AS (
            SELECT a.*, d.key IS NOT NULL AS listed,
                   d.key IS NOT NULL OR a.key IN (SELECT unnest(${prefix}_nf::VARCHAR[]))
                   OR row_number() OVER (PARTITION BY a.minute, a.name, d.key IS NULL
                                         ORDER BY a.n DESC, a.key) <= {MAX_CATEGORIES} AS kept
            FROM named a LEFT JOIN domain d ON d.fid = a.fid AND d.key = a.key)
        SELECT minute, {scope}, '{role}', name,
               CASE WHEN listed THEN 'category' ELSE 'other' END,
               CASE WHEN kept THEN key END, sum(n)::BIGINT,
               CASE WHEN NOT kept THEN count(*)::DOUBLE END, NULL::DOUBLE, NULL::DOUBLE,
               NULL::DOUBLE
        FROM ranked GROUP BY minute, name, listed, kept, CASE WHEN kept THEN key END"""
