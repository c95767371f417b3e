"""The baseline: what every feature looked like in the data a model was trained on.

``build_baseline`` summarizes a CSV, Parquet or JSON lines file (or a span of the log store) with
DuckDB aggregates, out of core, into a compact JSON document; ``load_baseline`` reads one back as a
:class:`Baseline`. docs/drift.md describes the file format.
"""

from __future__ import annotations

import itertools
import math
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np
import orjson

from ._errors import MonitorError
from ._statistics import METHODS

__all__ = [
    "FORMAT",
    "Baseline",
    "FeatureBaseline",
    "bin_tree_sql",
    "build_baseline",
    "load_baseline",
    "number_key_sql",
]

FORMAT = "inferwatch-baseline/1"
"""The ``format`` field of every baseline file this version writes and reads."""

MAX_CATEGORY_LENGTH = 256
"""Longer strings are never listed in a domain; their rows count in the ``other`` mass."""


def number_key_sql(x: str) -> str:
    """SQL for the category key of a DOUBLE expression: ``3`` for 3.0, else DuckDB's text."""
    return (
        f"CASE WHEN {x} = trunc({x}) AND abs({x}) < 1e15 "
        f"THEN CAST(CAST({x} AS BIGINT) AS VARCHAR) ELSE CAST({x} AS VARCHAR) END"
    )


def bin_tree_sql(tests: Sequence[str], leaf: Callable[[int], str] = str) -> str:
    """SQL for the index of the first true of ``tests`` (``len(tests)`` when none is true).

    ``tests`` must be monotone (each true implies the next), such as ``x < e1``, ``x < e2``...:
    then the index is the bin of ``x``. A binary search of nested CASEs takes about log2 of
    the bins comparisons per value, which DuckDB runs several times faster than a list lookup
    or a sum of comparisons. ``leaf`` gives the SQL of each result.
    """

    def tree(lo: int, hi: int) -> str:
        if lo == hi:
            return leaf(lo)
        mid = (lo + hi) // 2
        return f"CASE WHEN {tests[mid]} THEN {tree(lo, mid)} ELSE {tree(mid + 1, hi)} END"

    return tree(0, len(tests))


@dataclass(frozen=True, slots=True)
class FeatureBaseline:
    """One feature's summary; counts are of the baseline's rows, ``missing`` included."""

    name: str
    kind: str  # numeric | categorical
    dtype: str  # number | string | boolean: the type its values arrive as
    missing: int = 0
    non_finite: int = 0
    invalid: int = 0  # values of another type than ``dtype``
    edges: tuple[float, ...] = ()
    counts: tuple[int, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    std: float | None = None
    values: tuple[str, ...] = ()
    other: int = 0
    distinct: int = 0
    method: str = "jensenshannon"
    threshold: float | None = None
    critical: bool = False

    @property
    def rows(self) -> int:
        """Rows the summary covers: every value, missing and invalid ones included."""
        return sum(self.counts) + self.other + self.missing + self.non_finite + self.invalid

    @property
    def missing_share(self) -> float:
        return self.missing / self.rows if self.rows else 0.0

    @property
    def complete(self) -> bool:
        """True when ``values`` lists every category the baseline saw."""
        return self.other == 0

    def bin_counts(self) -> np.ndarray:
        """Counts aligned with the window's bins (docs/drift.md, "Bins").

        numeric: [bins..., below, above, missing, invalid]
        categorical: [values..., other, unseen, missing, invalid]
        """
        extra = [0, 0] if self.kind == "numeric" else [self.other, 0]
        tail = [self.missing, self.non_finite + self.invalid]
        return np.asarray([*self.counts, *extra, *tail], dtype=float)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"kind": self.kind, "dtype": self.dtype, "missing": self.missing}
        doc["required"] = self.missing == 0
        for key in ("non_finite", "invalid"):
            if getattr(self, key):
                doc[key] = getattr(self, key)
        if self.kind == "numeric":
            doc |= {"min": self.minimum, "max": self.maximum, "mean": self.mean, "std": self.std}
            doc |= {"edges": list(self.edges), "counts": list(self.counts)}
        else:
            doc |= {"values": list(self.values), "counts": list(self.counts)}
            doc |= {"other": self.other, "distinct": self.distinct}
        if self.method != "jensenshannon":
            doc["method"] = self.method
        if self.threshold is not None:
            doc["threshold"] = self.threshold
        if self.critical:
            doc["critical"] = True
        return doc

    @classmethod
    def from_json(cls, name: str, doc: Mapping[str, Any]) -> FeatureBaseline:
        """Validate one feature entry; raises ValueError naming what is wrong."""
        if not isinstance(doc, Mapping):
            raise ValueError(f"feature {name!r} is not an object")
        kind, dtype = doc.get("kind"), doc.get("dtype", "number")
        if kind not in ("numeric", "categorical"):
            raise ValueError(f"feature {name!r} has kind {kind!r}, not numeric or categorical")
        if dtype not in ("number", "string", "boolean"):
            raise ValueError(f"feature {name!r} has dtype {dtype!r}")
        counts = tuple(_count(name, "counts", value) for value in doc.get("counts", ()))
        method = doc.get("method", "jensenshannon")
        if method not in METHODS or (method == "wasserstein" and kind != "numeric"):
            raise ValueError(f"feature {name!r} cannot use method {method!r}")
        threshold = doc.get("threshold")
        if threshold is not None and not (_is_number(threshold) and threshold > 0):
            raise ValueError(f"feature {name!r} has threshold {threshold!r}, not a positive number")
        common: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "dtype": dtype,
            "missing": _count(name, "missing", doc.get("missing", 0)),
            "non_finite": _count(name, "non_finite", doc.get("non_finite", 0)),
            "invalid": _count(name, "invalid", doc.get("invalid", 0)),
            "counts": counts,
            "method": method,
            "threshold": None if threshold is None else float(threshold),
            "critical": bool(doc.get("critical", False)),
        }
        if kind == "categorical":
            values = tuple(doc.get("values", ()))
            if len(values) != len(counts) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"feature {name!r} needs as many string values as counts")
            other = _count(name, "other", doc.get("other", 0))
            distinct = _count(name, "distinct", doc.get("distinct", len(values)))
            return cls(**common, values=values, other=other, distinct=distinct)
        edges = tuple(float(e) for e in doc.get("edges", ()) if _is_number(e))
        if len(edges) != len(doc.get("edges", ())) or (counts and len(edges) != len(counts) + 1):
            raise ValueError(f"feature {name!r} needs numeric edges, one more than its counts")
        constant = len(edges) == 2 and edges[0] == edges[1]
        if not constant and any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"feature {name!r} has edges out of order")
        stats = {k: doc.get(k) for k in ("min", "max", "mean", "std")}
        if any(v is not None and not _is_number(v) for v in stats.values()):
            raise ValueError(f"feature {name!r} has a non-numeric min, max, mean or std")
        return cls(
            **common,
            edges=edges,
            minimum=stats["min"],
            maximum=stats["max"],
            mean=stats["mean"],
            std=stats["std"],
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _count(name: str, key: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"feature {name!r} has {key} {value!r}, not a count")
    return value


@dataclass(frozen=True, slots=True)
class Baseline:
    """A loaded, validated baseline (see :func:`load_baseline`)."""

    rows: int
    features: dict[str, FeatureBaseline]
    predictions: dict[str, FeatureBaseline] = field(default_factory=dict)
    label: FeatureBaseline | None = None
    label_column: str | None = None
    quality: dict[str, Any] | None = None
    columns: tuple[str, ...] = ()
    bins: int = 20
    drift_share: float | None = None
    path: str | None = None
    document: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_document(cls, doc: Any, path: str | None = None) -> Baseline:
        """Validate a parsed baseline document; raises ValueError naming what is wrong."""
        if not isinstance(doc, dict):
            raise ValueError("the file is not a JSON object")
        if doc.get("format") != FORMAT:
            raise ValueError(f"format is {doc.get('format')!r}, expected {FORMAT!r}")
        rows = doc.get("rows")
        if not isinstance(rows, int) or isinstance(rows, bool) or rows < 0:
            raise ValueError("rows is missing or not a count")
        sections = {}
        for key in ("features", "predictions"):
            section = doc.get(key, {})
            if not isinstance(section, dict):
                raise ValueError(f"{key} is not an object")
            sections[key] = {n: FeatureBaseline.from_json(n, v) for n, v in section.items()}
        label_doc = doc.get("label")
        label = None
        if label_doc is not None:
            if not isinstance(label_doc, dict) or not isinstance(label_doc.get("column"), str):
                raise ValueError("label needs a column name")
            label = FeatureBaseline.from_json(label_doc["column"], label_doc)
        share = doc.get("drift_share")
        if share is not None and not (_is_number(share) and 0 <= share <= 1):
            raise ValueError("drift_share is not a share between 0 and 1")
        columns = doc.get("columns", list(sections["features"]))
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
            raise ValueError("columns is not a list of names")
        quality = doc.get("quality")
        return cls(
            rows=rows,
            features=sections["features"],
            predictions=sections["predictions"],
            label=label,
            label_column=label.name if label else None,
            quality=quality if isinstance(quality, dict) else None,
            columns=tuple(columns),
            bins=int(doc.get("bins", 20)),
            drift_share=share,
            path=path,
            document=doc,
        )


def load_baseline(path: str) -> Baseline:
    """Read and validate a baseline file; raises :class:`MonitorError` on a bad one."""
    try:
        with open(path, "rb") as handle:
            doc = orjson.loads(handle.read())
        return Baseline.from_document(doc, path)
    except OSError as exc:
        raise MonitorError(f"cannot read baseline file {path}: {exc.strerror}") from exc
    except orjson.JSONDecodeError as exc:
        raise MonitorError(f"baseline file {path} is not valid JSON: {exc}") from exc
    except (ValueError, TypeError, KeyError) as exc:
        raise MonitorError(f"baseline file {path} is not a valid baseline: {exc}") from exc


MAX_SIZE = 1_000_000
"""Bytes a baseline file may take (a Kubernetes ConfigMap holds 1 MiB); categorical domains
past the 50 most frequent values shrink first."""

TOP_VALUES = 50
QUANTILE_SAMPLE = 8192
"""Bin edges are quantiles of a reservoir sample this large (bin counts are exact): a t-digest
over every value costs three times as much for edges no more useful."""
LOW_CARDINALITY = 20  # number columns with at most this many values are categorical
_EXACT_CARDINALITY = 10_000  # above, categorical counts come from an approximate top-k first
_READERS = {
    "csv": "read_csv_auto",
    "tsv": "read_csv_auto",
    "txt": "read_csv_auto",
    "parquet": "read_parquet",
    "pq": "read_parquet",
    "json": "read_json_auto",
    "jsonl": "read_json_auto",
    "ndjson": "read_json_auto",
}
_STORE_SUFFIXES = ("duckdb", "db")
_INTEGER_TYPES = frozenset(
    f"{sign}{size}INT" for sign in ("", "U") for size in ("TINY", "SMALL", "BIG", "HUGE", "")
) | {"INTEGER", "UINTEGER"}
_TEXT_TYPES = ("VARCHAR", "DATE", "TIME", "TIMESTAMP", "UUID", "ENUM", "INTERVAL")


def build_baseline(
    source: str,
    *,
    out: str | None,
    label_column: str | None = None,
    prediction_column: str | None = None,
    exclude: Iterable[str] = (),
    categorical: Iterable[str] = (),
    bins: int = 20,
    time_range: tuple[datetime, datetime] | None = None,
    progress: Callable[[str], None] | None = None,
    memory_limit: str = "1GB",
    temp_directory: str | None = None,
) -> dict[str, Any]:
    """Summarize ``source`` into a baseline document, write it to ``out`` and return it.

    ``source`` is a CSV, Parquet or JSON lines file, read by DuckDB out of core within
    ``memory_limit`` (spilling to ``temp_directory``) in three scans, or a DuckDB log store
    (``.duckdb``) whose inputs logged within ``time_range`` become the features and whose
    outputs the prediction section. ``progress`` receives one line per phase and per second of
    a long scan. Raises :class:`MonitorError` with one sentence when the source cannot be read.
    """
    if not 2 <= bins <= 64:
        raise MonitorError(f"bins must be between 2 and 64, not {bins}")
    say = progress or (lambda _line: None)
    suffix = _suffix(source)
    temp = tempfile.TemporaryDirectory(prefix="inferwatch-baseline-", dir=temp_directory)
    config = {"memory_limit": memory_limit, "temp_directory": temp.name}
    config["preserve_insertion_order"] = False
    try:
        if suffix in _STORE_SUFFIXES:
            con = duckdb.connect(source, read_only=True, config=config)
        elif suffix in _READERS:
            con = duckdb.connect(config=config)
        else:
            raise MonitorError(f"{source} is not CSV, Parquet, JSON lines or a DuckDB log store")
    except duckdb.Error as exc:
        temp.cleanup()
        raise MonitorError(f"cannot open {source}: {_first_line(exc)}") from exc
    try:
        if suffix in _STORE_SUFFIXES:
            skip = frozenset(exclude)
            doc = _from_store(con, bins, time_range, frozenset(categorical), skip, say)
        else:
            keep = {"label": label_column, "prediction": prediction_column}
            reader = f"{_READERS[suffix]}($path)"
            doc = _from_file(con, source, reader, keep, exclude, categorical, bins, say)
    except duckdb.Error as exc:
        raise MonitorError(f"cannot summarize {source}: {_first_line(exc)}") from exc
    finally:
        con.close()
        temp.cleanup()
    doc["source"] = {"path": source, "time_range": _range_json(time_range)}
    _fit(doc, MAX_SIZE)
    Baseline.from_document(doc, out)  # what we write, we can read back
    if out is not None:
        say(f"writing {out}")
        try:
            with open(out, "wb") as handle:
                handle.write(orjson.dumps(doc))
        except OSError as exc:
            raise MonitorError(f"cannot write baseline file {out}: {exc.strerror}") from exc
    return doc


def _suffix(path: str) -> str:
    parts = os.path.basename(path).lower().split(".")
    while len(parts) > 2 and parts[-1] in ("gz", "zst", "zstd"):
        parts.pop()
    return parts[-1] if len(parts) > 1 else ""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _range_json(time_range: tuple[datetime, datetime] | None) -> list[str] | None:
    return [t.isoformat() for t in time_range] if time_range else None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _scan(con: Any, sql: str, params: dict[str, Any], phase: str, say: Callable) -> list:
    """Run one query, reporting DuckDB's progress once a second while it runs."""
    say(phase)
    done = threading.Event()

    def watch() -> None:
        while not done.wait(1.0):
            share = con.query_progress()
            if share >= 0:
                say(f"{phase}: {share:.0f}%")

    watcher = threading.Thread(target=watch, name="inferwatch-baseline-progress", daemon=True)
    watcher.start()
    try:
        return con.execute(sql, params).fetchall()
    finally:
        done.set()
        watcher.join()


@dataclass(slots=True)
class _Column:
    name: str
    dtype: str  # number | string | boolean
    value: str  # SQL of the value as DOUBLE (numbers) or as given
    key: str  # SQL of its category key
    stats: dict[str, Any] = field(default_factory=dict)


def _columns(described: list[tuple], skip: frozenset[str], say: Callable) -> list[_Column]:
    columns = []
    for name, sql_type, *_ in described:
        if name in skip:
            continue
        q, base = _quote(name), sql_type.split("(")[0]
        if base in _INTEGER_TYPES or base in ("FLOAT", "DOUBLE", "DECIMAL"):
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


def _from_file(
    con: Any,
    source: str,
    reader: str,
    keep: dict[str, str | None],
    exclude: Iterable[str],
    categorical: Iterable[str],
    bins: int,
    say: Callable,
) -> dict[str, Any]:
    src = {"path": source}
    describe = f"DESCRIBE SELECT * FROM {reader}"  # noqa: S608 -- a reader call; the path is bound
    described = _scan(con, describe, src, f"reading {source}", say)
    names = [row[0] for row in described]
    for role, column in keep.items():
        if column is not None and column not in names:
            raise MonitorError(f"the {role} column {column!r} is not in {source}")
    columns = _columns(described, frozenset(exclude) - {c for c in keep.values() if c}, say)
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
    first = list(_scan(con, sql, src | {"q": quantiles}, "scan 1/3: statistics", say)[0])
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
    return _document(rows, bins, [c.name for c in columns], summaries, keep, quality)


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
        n, mae, mse, var = _scan(con, sql, src, phase, say)[0]
        r2 = 1.0 - mse / var if n and var else None
        rmse = math.sqrt(mse) if n else None
        return {"task": "regression", "rows": n, "mae": mae, "rmse": rmse, "r2": r2}
    sql = (
        f"SELECT {label.key}, {prediction.key}, count(*) FROM {reader} "  # noqa: S608
        f"WHERE {label.value} IS NOT NULL AND {prediction.value} IS NOT NULL GROUP BY ALL"
    )
    return classification_quality(_scan(con, sql, src, phase, say))


def classification_quality(confusion: Iterable[tuple[str, str, int]]) -> dict[str, Any]:
    """Accuracy, macro F1 and per-class precision and recall from (label, prediction, count)."""
    cells = [(str(y), str(p), int(n)) for y, p, n in confusion]
    total = sum(n for *_, n in cells)
    classes = sorted({y for y, _, _ in cells} | {p for _, p, _ in cells})
    per_class, f1s = {}, []
    for c in classes:
        hit = sum(n for y, p, n in cells if y == c and p == c)
        predicted = sum(n for _, p, n in cells if p == c)
        actual = sum(n for y, _, n in cells if y == c)
        precision = hit / predicted if predicted else 0.0
        recall = hit / actual if actual else 0.0
        f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        per_class[c] = {"precision": precision, "recall": recall, "support": actual}
    accuracy = sum(n for y, p, n in cells if y == p) / total if total else None
    macro_f1 = sum(f1s) / len(f1s) if f1s else None
    return {
        "task": "classification",
        "rows": total,
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "per_class": per_class,
    }


def _finite(x: str) -> str:
    return f"CASE WHEN isfinite({x}) THEN {x} END"


def _numeric(c: _Column) -> bool:
    return c.stats["kind"] == "numeric"


def _file_histograms(
    con: Any, reader: str, src: dict, columns: list[_Column], rows: int, say: Callable
) -> dict[str, FeatureBaseline]:
    inner, parts, params, edges = [], [], dict(src), {}
    for i, c in enumerate(columns):
        edges[c.name] = _edges(c.stats["min"], c.stats["max"], c.stats["quantiles"] or [])
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
        for j, b, n in _scan(con, sql, params, "scan 2/3: histograms", say):
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
            mean=_digits(s["mean"]),
            std=_digits(s["std"]),
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
    for j, key, count in _scan(con, sql, params, "scan 3/3: categories", say):
        found.setdefault(j, []).append((key, int(count)))
    result = {}
    for i, c in enumerate(columns):
        present = c.stats["present"]
        result[c.name] = _categorical(c.name, c.dtype, rows - present, present, found.get(i, []))
        if c.stats["distinct"] > _EXACT_CARDINALITY:
            result[c.name] = replace(result[c.name], distinct=int(c.stats["distinct"]))
    return result


def _categorical(
    name: str,
    dtype: str,
    missing: int,
    present: int,
    counted: list[tuple[str, int]],
    invalid: int = 0,
) -> FeatureBaseline:
    ranked = sorted(counted, key=lambda item: (-item[1], item[0]))
    top = [(k, n) for k, n in ranked if len(k) <= MAX_CATEGORY_LENGTH][:TOP_VALUES]
    return FeatureBaseline(
        name=name,
        kind="categorical",
        dtype=dtype,
        missing=missing,
        invalid=invalid,
        values=tuple(k for k, _ in top),
        counts=tuple(n for _, n in top),
        other=present - invalid - sum(n for _, n in top),
        distinct=len(counted),
    )


def _edges(minimum: float | None, maximum: float | None, quantiles: list[float]) -> list[float]:
    """Bin edges: min, the distinct quantiles strictly inside (min, max), max."""
    if minimum is None or maximum is None:
        return []
    if minimum == maximum:
        return [minimum, maximum]
    tolerance = (maximum - minimum) * 1e-4
    inner = sorted({_short(q, tolerance) for q in quantiles if minimum < q < maximum})
    inner = [q for q in inner if minimum < q < maximum]
    return [minimum, *inner, maximum]


def _short(value: float, tolerance: float) -> float:
    """``value`` with the fewest significant digits (at least 4) within ``tolerance``."""
    for digits in range(4, 17):
        rounded = float(f"{value:.{digits}g}")
        if abs(rounded - value) <= tolerance:
            return rounded
    return value


def _digits(value: float | None) -> float | None:
    return value if value is None or not math.isfinite(value) else float(f"{value:.7g}")


def _document(
    rows: int,
    bins: int,
    order: list[str],
    summaries: dict[str, FeatureBaseline],
    keep: dict[str, str | None],
    quality: dict[str, Any] | None = None,
) -> dict[str, Any]:
    label, prediction = keep.get("label"), keep.get("prediction")
    special = {label, prediction}
    doc: dict[str, Any] = {"format": FORMAT, "created_at": _now(), "rows": rows, "bins": bins}
    doc["columns"] = [n for n in order if n not in special]
    doc["features"] = {n: summaries[n].to_json() for n in doc["columns"]}
    doc["predictions"] = {}
    if prediction is not None:
        # the contract names a {"predictions": [...]} response's values "prediction"
        doc["predictions"]["prediction"] = summaries[prediction].to_json() | {"column": prediction}
    doc["label"] = summaries[label].to_json() | {"column": label} if label else None
    doc["quality"] = quality
    return doc


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _fit(doc: dict[str, Any], limit: int) -> None:
    """Shorten the longest categorical domains until the document fits in ``limit`` bytes."""
    size = len(orjson.dumps(doc))
    top = TOP_VALUES
    while size > limit and top > 5:
        top //= 2
        for section in (doc["features"], doc["predictions"]):
            for entry in section.values():
                if entry["kind"] == "categorical" and len(entry["values"]) > top:
                    entry["other"] += sum(entry["counts"][top:])
                    entry["values"], entry["counts"] = entry["values"][:top], entry["counts"][:top]
        size = len(orjson.dumps(doc))
    if size > limit:
        raise MonitorError(f"the baseline takes {size} bytes, over {limit}; exclude some columns")


def _from_store(
    con: Any,
    bins: int,
    time_range: tuple[datetime, datetime] | None,
    wanted: frozenset[str],
    skip: frozenset[str],
    say: Callable,
) -> dict[str, Any]:
    """Summarize the features and outputs logged within ``time_range`` (all when None)."""
    from ._drift import numeric_counts, window_rows

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
    found = _scan(con, sql, span | {"quantiles": quantiles}, "scan 1/3: statistics", say)
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
                    edges=tuple(_edges(lo, hi, qs or [])),
                    minimum=lo,
                    maximum=hi,
                    mean=_digits(mean),
                    std=_digits(std),
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
    doc = _document(
        doc_rows, bins, order, {n: f for (r, n), f in result.items() if r == "input"}, {}
    )
    doc["predictions"] = {n: f.to_json() for (r, n), f in sorted(result.items()) if r == "output"}
    return doc


def _store_categories(
    con: Any,
    features: list[tuple[str, FeatureBaseline]],
    present_same: dict[tuple[str, str], int],
    span: dict[str, Any],
) -> dict[tuple[str, str], FeatureBaseline]:
    from ._drift import _KEY

    wanted = [(r, f) for r, f in features if f.kind == "categorical"]
    if not wanted:
        return {}
    sql = f"""
        WITH spec AS (SELECT unnest($roles::VARCHAR[]) AS role, unnest($names::VARCHAR[]) AS name,
                             unnest($dtypes::VARCHAR[]) AS dtype),
        agg AS (SELECT f.role, f.name, {_KEY} AS key, count(*) AS n
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
        feature = _categorical(f.name, f.dtype, f.missing, present, same, f.invalid)
        result[role, f.name] = replace(feature, distinct=distinct.get((role, f.name), 0))
    return result
