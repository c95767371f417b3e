"""A baseline from a CSV, Parquet or JSON lines file: three scans by DuckDB, out of core.

Each column gets the type its values will have in served JSON: a CSV is read as text and a
column becomes numbers only when every value is written as a number (``01234`` stays text), so
``yes``/``no`` or ``true``/``false`` in a CSV are strings, as a JSON client would send them. Only
Parquet or JSON booleans, or the columns named in ``booleans``, are booleans. A text-type scan
runs first for a CSV or for ``booleans``.

Scan 1 computes each column's statistics and quantiles, scan 2 the exact counts in the quantile
bins of numeric columns, scan 3 the exact counts of categorical values; with a label and a
prediction column, one more scan scores the model on the file. Python sees one row of
aggregates per scan, or one per (column, bin) and (column, value).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import MonitorError
from ..stats.outliers import TOP_CATEGORIES, OutlierModel, fit_outlier_model
from ..stats.summary_sql import (
    NUMBER_TEXT,
    bin_tree_sql,
    number_key_sql,
    quote_name,
    run_with_progress,
)
from .file import FeatureBaseline
from .profiles import (
    LOW_CARDINALITY,
    QUANTILE_SAMPLE,
    TOP_VALUES,
    baseline_document,
    bin_edges,
    categorical_profile,
    classification_quality,
    round_stat,
)

__all__ = ["summarize_file"]

_READERS = {
    "csv": "read_csv($path, all_varchar = true, header = true)",
    "parquet": "read_parquet($path)",
    "json": "read_json_auto($path)",
}
_MODEL_SAMPLE = 200_000  # rows: half fit the outlier model, half measure its scores
_MODEL_FEATURES = 150
_EXACT_CARDINALITY = 10_000  # above, categorical counts come from an approximate top-k first
_INTEGER_TYPES = frozenset(
    f"{sign}{size}INT" for sign in ("", "U") for size in ("TINY", "SMALL", "BIG", "HUGE", "")
) | {"INTEGER", "UINTEGER"}
_TEXT_TYPES = ("VARCHAR", "DATE", "TIME", "TIMESTAMP", "UUID", "ENUM", "INTERVAL")
# DuckDB's JSON reader turns strings that look like times into DATE, TIME or TIMESTAMP, whose
# text is not what a client sends: those columns are read back as the strings they are.
_JSON_STRINGS = ("DATE", "TIME", "TIMESTAMP", "UUID", "INTERVAL")
_NON_FINITE_TEXT = r"[+-]?(nan|inf|infinity)"
_TRUE = ("true", "t", "yes", "y", "1", "1.0")
_FALSE = ("false", "f", "no", "n", "0", "0.0")


@dataclass(slots=True)
class _Column:
    name: str
    dtype: str  # number | string | boolean
    value: str  # SQL of the value as DOUBLE (numbers) or as given
    key: str  # SQL of its category key
    stats: dict[str, Any] = field(default_factory=dict)


def _boolean_sql(q: str) -> str:
    text = f"lower(trim(CAST({q} AS VARCHAR)))"
    true, false = ", ".join(f"'{v}'" for v in _TRUE), ", ".join(f"'{v}'" for v in _FALSE)
    return f"CASE WHEN {text} IN ({true}) THEN true WHEN {text} IN ({false}) THEN false END"


def _text_kinds(
    con: Any,
    reader: str,
    src: dict,
    text: list[str],
    booleans: list[str],
    source: str,
    say: Callable,
) -> dict[str, str]:
    """The JSON type of each CSV text column in ``text`` (number or string), after checking
    that each column in ``booleans`` holds only boolean words; one scan over the file."""
    parts = []
    for name in text:
        q = quote_name(name)
        number = f"regexp_full_match(trim({q}), '{NUMBER_TEXT}')"
        non_finite = f"regexp_full_match(lower(trim({q})), '{_NON_FINITE_TEXT}')"
        parts.append(f"bool_and({number} OR {non_finite})")
    for name in booleans:
        q = quote_name(name)
        parts.append(f"max(CASE WHEN {q} IS NOT NULL AND {_boolean_sql(q)} IS NULL THEN {q} END)")
    sql = f"SELECT {', '.join(parts)} FROM {reader}"  # noqa: S608 -- quoted names only
    found = list(run_with_progress(con, sql, src, "reading column types", say)[0])
    kinds = {name: "number" if found.pop(0) else "string" for name in text}
    for name in booleans:
        bad = found.pop(0)
        if bad is not None:
            raise MonitorError(
                f"the boolean column {name!r} of {source} holds {str(bad)[:40]!r}; "
                f"use true/false, yes/no, y/n or 1/0"
            )
        kinds[name] = "boolean"
    return kinds


def _columns(
    described: list[tuple], skip: frozenset[str], kinds: dict[str, str], say: Callable
) -> list[_Column]:
    columns = []
    for name, sql_type, *_ in described:
        if name in skip:
            continue
        q, base = quote_name(name), sql_type.split("(")[0]
        kind = kinds.get(name)
        if kind == "boolean" and base != "BOOLEAN":
            x = _boolean_sql(q)
            columns.append(_Column(name, "boolean", x, f"CAST({x} AS VARCHAR)"))
        elif kind == "number":
            # trim() also keeps DuckDB from pushing the cast into the CSV reader, where it would
            # become the column's type and fail the scan on any value that is not a number.
            x = f"TRY_CAST(trim({q}) AS DOUBLE)"
            columns.append(_Column(name, "number", x, number_key_sql(x)))
        elif base in _INTEGER_TYPES or base in ("FLOAT", "DOUBLE", "DECIMAL"):
            x = f"CAST({q} AS DOUBLE)"
            columns.append(_Column(name, "number", x, number_key_sql(x)))
        elif base == "BOOLEAN":
            columns.append(_Column(name, "boolean", q, f"CAST({q} AS VARCHAR)"))
        elif base.startswith(_TEXT_TYPES):
            text = q if base == "VARCHAR" else f"CAST({q} AS VARCHAR)"
            columns.append(_Column(name, "string", text, text))
        else:
            say(f"skipping column {name}: {sql_type} values are not summarized")
    return columns


def summarize_file(
    con: Any,
    source: str,
    file_format: str,
    keep: dict[str, str | None],
    exclude: Iterable[str],
    categorical: Iterable[str],
    bins: int,
    say: Callable,
    booleans: Iterable[str] = (),
) -> dict[str, Any]:
    """The baseline document of the file ``source`` (``file_format`` ``csv``, ``parquet`` or
    ``json``). ``keep`` names the label and prediction columns, ``exclude`` columns to skip,
    ``categorical`` number columns to treat as categories and ``booleans`` columns whose
    words (true/false, yes/no, y/n, 1/0) are booleans."""
    src: dict[str, Any] = {"path": source}
    reader = _READERS[file_format]
    describe = f"DESCRIBE SELECT * FROM {reader}"  # noqa: S608 -- a reader call; the path is bound
    described = run_with_progress(con, describe, src, f"reading {source}", say)
    names = [row[0] for row in described]
    booleans = list(dict.fromkeys(booleans))
    for role, column in [*keep.items(), *(("boolean", c) for c in booleans)]:
        if column is not None and column not in names:
            raise MonitorError(f"the {role} column {column!r} is not in {source}")
    if file_format == "json" and any(t.startswith(_JSON_STRINGS) for _, t, *_ in described):
        reader = "read_json($path, columns = $columns)"
        src["columns"] = {
            name: "VARCHAR" if t.startswith(_JSON_STRINGS) else t for name, t, *_ in described
        }
    skip = frozenset(exclude) - {c for c in keep.values() if c}
    booleans = [n for n in booleans if n not in skip]
    text = [n for n in names if n not in skip and n not in booleans] if file_format == "csv" else []
    kinds = _text_kinds(con, reader, src, text, booleans, source, say) if text or booleans else {}
    columns = _columns(described, skip, kinds, say)
    quantiles = [i / bins for i in range(1, bins)]
    # aggregates over a projection, not with FILTER clauses, which DuckDB runs 5x slower
    inner, parts = [], ["count(*)"]
    for i, c in enumerate(columns):
        inner += [f"{c.value} AS v{i}", f"{c.key} AS k{i}"]
        inner += [f"{_finite(c.value)} AS f{i}"] if c.dtype == "number" else []
        parts += [f"count(v{i})", f"approx_count_distinct(k{i})"]
        if c.dtype == "number":
            parts += [f"count(f{i})", f"min(f{i})", f"max(f{i})", f"avg(f{i})"]
            parts += [f"stddev_pop(f{i})", f"reservoir_quantile(f{i}, $q, {QUANTILE_SAMPLE})"]
        elif c.dtype == "string":
            parts.append(f"approx_top_k(k{i}, {TOP_VALUES})")
    sql = f"SELECT {', '.join(parts)} FROM (SELECT {', '.join(inner)} FROM {reader})"  # noqa: S608
    first = list(
        run_with_progress(con, sql, src | {"q": quantiles}, "scan 1/3: statistics", say)[0]
    )
    rows = int(first.pop(0))
    wanted = frozenset(categorical)
    for c in columns:
        c.stats = {"present": first.pop(0), "distinct": first.pop(0)}
        if c.dtype == "number":
            keys = ("finite", "min", "max", "mean", "std", "quantiles")
            c.stats |= dict(zip(keys, (first.pop(0) for _ in keys), strict=True))
            c.stats["non_finite"] = c.stats["present"] - c.stats["finite"]
        elif c.dtype == "string":
            c.stats["top"] = first.pop(0) or []
        categorical_number = c.stats["distinct"] <= LOW_CARDINALITY
        numeric = c.dtype == "number" and c.name not in wanted and not categorical_number
        c.stats["kind"] = "numeric" if numeric else "categorical"
    summaries = _file_histograms(con, reader, src, [c for c in columns if _numeric(c)], rows, say)
    cats = [c for c in columns if not _numeric(c)]
    summaries |= _file_categories(con, reader, src, cats, rows, say)
    quality = None
    if keep["label"] and keep["prediction"]:
        by_name = {c.name: c for c in columns}
        label, prediction = by_name.get(keep["label"]), by_name.get(keep["prediction"])
        if label is not None and prediction is not None:
            quality = _quality(con, reader, src, label, prediction, say)
    doc = baseline_document(rows, bins, [c.name for c in columns], summaries, keep, quality)
    model = _outlier_model(con, reader, src, columns, doc["features"], say)
    if model is not None:
        doc["outliers"] = model.to_json()
    return doc


def _outlier_model(
    con: Any, reader: str, src: dict, columns: list[_Column], features: dict, say: Callable
) -> OutlierModel | None:
    """The multivariate model of the features, fitted on a reservoir sample of the file."""
    chosen = [c for c in columns if c.name in features][:_MODEL_FEATURES]
    if not chosen:
        return None
    params, exprs = dict(src), []
    for i, c in enumerate(chosen):
        if _numeric(c):
            exprs.append(_finite(c.value))
        else:  # only the categories the model can one-hot: a sample of ids would not fit
            params[f"m{i}"] = features[c.name]["values"][:TOP_CATEGORIES]
            exprs.append(f"CASE WHEN list_contains($m{i}, {c.key}) THEN {c.key} END")
    sql = (
        f"SELECT * FROM (SELECT {', '.join(exprs)} FROM {reader}) "  # noqa: S608 -- quoted names
        f"USING SAMPLE reservoir({_MODEL_SAMPLE} ROWS) REPEATABLE (7)"
    )
    say("outlier model")
    sample = con.execute(sql, params).fetchnumpy()  # arrays: no Python object per value
    cells = [sample[key] for key in sample]
    if not len(cells[0]):
        return None
    numeric = {
        c.name: np.ma.filled(np.ma.asarray(cells[i]).astype(float), np.nan)
        for i, c in enumerate(chosen)
        if _numeric(c)
    }
    categorical = {
        c.name: np.ma.filled(np.ma.asarray(cells[i], dtype=object), None).tolist()
        for i, c in enumerate(chosen)
        if not _numeric(c)
    }
    values = {name: features[name]["values"] for name in categorical}
    return fit_outlier_model(numeric, categorical, values)


def _quality(
    con: Any, reader: str, src: dict, label: _Column, prediction: _Column, say: Callable
) -> dict[str, Any]:
    """The model's quality on the baseline: regression errors, or classification scores."""
    phase = "model quality"
    if _numeric(label):
        y, p = label.value, prediction.value
        sql = (
            f"SELECT count(*), avg(abs({y} - {p})), avg(({y} - {p}) ^ 2), var_pop({y}) "  # noqa: S608
            f"FROM {reader} WHERE isfinite({y}) AND isfinite({p})"
        )
        n, mae, mse, var = run_with_progress(con, sql, src, phase, say)[0]
        r2 = 1.0 - mse / var if n and var else None
        rmse = math.sqrt(mse) if n else None
        return {"task": "regression", "rows": n, "mae": mae, "rmse": rmse, "r2": r2}
    sql = (
        f"SELECT {label.key}, {prediction.key}, count(*) FROM {reader} "  # noqa: S608
        f"WHERE {label.value} IS NOT NULL AND {prediction.value} IS NOT NULL GROUP BY ALL"
    )
    return classification_quality(run_with_progress(con, sql, src, phase, say))


def _finite(x: str) -> str:
    return f"CASE WHEN isfinite({x}) THEN {x} END"


def _numeric(c: _Column) -> bool:
    return c.stats["kind"] == "numeric"


def _file_histograms(
    con: Any, reader: str, src: dict, columns: list[_Column], rows: int, say: Callable
) -> dict[str, FeatureBaseline]:
    inner, parts, params, edges = [], [], dict(src), {}
    for i, c in enumerate(columns):
        edges[c.name] = bin_edges(c.stats["min"], c.stats["max"], c.stats["quantiles"] or [])
        for j, edge in enumerate(edges[c.name][1:-1], start=1):
            params[f"e{i}_{j}"] = edge
        tree = bin_tree_sql([f"f{i} < $e{i}_{j}" for j in range(1, len(edges[c.name]) - 1)])
        inner.append(f"{_finite(c.value)} AS f{i}")
        parts.append(f"CASE WHEN f{i} IS NOT NULL THEN {tree} END")
    counts: dict[int, dict[int, int]] = {}
    if parts:
        # one (column, bin) GROUP BY over unnested lists: DuckDB's histogram() aggregate ran
        # out of a 1 GB limit on 3,000 rows of 400 columns
        params["index"] = list(range(len(parts)))
        sql = (
            f"SELECT j, b, count(*) FROM (SELECT unnest([{', '.join(parts)}]) AS b, "  # noqa: S608
            f"unnest($index::INTEGER[]) AS j FROM (SELECT {', '.join(inner)} FROM {reader})) "
            "WHERE b IS NOT NULL GROUP BY ALL"
        )
        for j, b, n in run_with_progress(con, sql, params, "scan 2/3: histograms", say):
            counts.setdefault(j, {})[b] = int(n)
    result = {}
    for i, c in enumerate(columns):
        e, found = edges[c.name], counts.get(i, {})
        k = max(len(e) - 1, 0)
        s = c.stats
        result[c.name] = FeatureBaseline(
            name=c.name,
            kind="numeric",
            dtype="number",
            missing=rows - s["present"],
            non_finite=s["non_finite"],
            edges=tuple(e),
            counts=tuple(found.get(b, 0) for b in range(k)),
            minimum=s["min"],
            maximum=s["max"],
            mean=round_stat(s["mean"]),
            std=round_stat(s["std"]),
        )
    return result


def _file_categories(
    con: Any, reader: str, src: dict, columns: list[_Column], rows: int, say: Callable
) -> dict[str, FeatureBaseline]:
    if not columns:
        return {}
    params, keys = dict(src), []
    for i, c in enumerate(columns):
        if c.stats["distinct"] > _EXACT_CARDINALITY and c.stats.get("top"):
            params[f"top{i}"] = c.stats["top"]
            keys.append(f"CASE WHEN list_contains($top{i}, {c.key}) THEN {c.key} END")
        else:
            keys.append(c.key)
    params["index"] = list(range(len(columns)))
    sql = (
        f"SELECT j, key, count(*) FROM (SELECT unnest([{', '.join(keys)}]) AS key, "  # noqa: S608
        f"unnest($index::INTEGER[]) AS j FROM {reader}) WHERE key IS NOT NULL GROUP BY ALL"
    )
    found: dict[int, list[tuple[str, int]]] = {}
    for j, key, count in run_with_progress(con, sql, params, "scan 3/3: categories", say):
        found.setdefault(j, []).append((key, int(count)))
    result = {}
    for i, c in enumerate(columns):
        present = c.stats["present"]
        result[c.name] = categorical_profile(
            c.name, c.dtype, rows - present, present, found.get(i, [])
        )
        if c.stats["distinct"] > _EXACT_CARDINALITY:
            result[c.name] = replace(result[c.name], distinct=int(c.stats["distinct"]))
    return result
