"""The baseline's training attributions and feature importances, read for ``baseline build``.

Attributions come from a file with one column per feature (CSV, Parquet or JSON lines, columns
named as the features), or from columns of the training file whose names start with a prefix
(``shap_age`` for ``age`` with ``--attributions shap_``); importances from a JSON object or a
two-column CSV (feature, importance).
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from typing import Any

import duckdb
import orjson

from ..errors import MonitorError
from ..stats.summary_sql import quote_name

__all__ = ["attribution_source", "read_importances", "summarize_attributions"]

_READERS = {
    "csv": "read_csv(?, all_varchar = true, header = true)",
    "parquet": "read_parquet(?)",
    "json": "read_json_auto(?)",
}


def attribution_source(spec: str, source: str, file_format: str) -> tuple[str, str, dict[str, str]]:
    """The file that holds the attributions, its format and its columns by feature name, from
    ``spec``: a file, or a prefix of columns of ``source``."""
    path = spec if os.path.isfile(spec) else source
    fmt = _format(path) if path != source else file_format
    try:
        with duckdb.connect() as con:
            described = con.execute(f"DESCRIBE SELECT * FROM {_READERS[fmt]}", [path])  # noqa: S608
            names = [row[0] for row in described.fetchall()]
    except duckdb.Error as exc:
        raise MonitorError(f"cannot read attributions from {path}: {exc}") from exc
    if path != source:
        return path, fmt, {name: name for name in names}
    columns = {n.removeprefix(spec): n for n in names if n.startswith(spec) and n != spec}
    if not columns:
        raise MonitorError(f"no column of {source} starts with {spec!r}, nor is it a file")
    return path, fmt, columns


def summarize_attributions(
    build: Callable[..., dict[str, Any]], path: str, file_format: str, columns: dict[str, str]
) -> dict[str, Any]:
    """The baseline's ``attributions`` entry: each feature's attribution summary and mean |a|."""
    doc = build(path, out=None, exclude=_others(path, columns, file_format))
    features = {}
    for feature, column in columns.items():
        entry = doc["features"].get(column)
        if entry is None or entry["kind"] != "numeric":
            raise MonitorError(f"the attribution column {column!r} does not hold numbers")
        features[feature] = entry
    parts = ", ".join(f"avg(abs(TRY_CAST({quote_name(c)} AS DOUBLE)))" for c in columns.values())
    with duckdb.connect() as con:
        row = con.execute(f"SELECT {parts} FROM {_READERS[file_format]}", [path]).fetchone()  # noqa: S608
    means = {f: float(v or 0.0) for f, v in zip(columns, row or (), strict=True)}
    return {"features": features, "mean_abs": means}


def read_importances(path: str) -> dict[str, float]:
    """Feature importances from a JSON object or a CSV of (feature, importance) rows."""
    try:
        with open(path, "rb") as handle:
            text = handle.read()
    except OSError as exc:
        raise MonitorError(f"cannot read importances file {path}: {exc.strerror}") from exc
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        rows = list(csv.reader(text.decode("utf-8", "replace").splitlines()))
        doc = {}
        for row in rows[1:] if rows and not _is_number(rows[0][-1]) else rows:
            if len(row) == 2 and _is_number(row[1]):
                doc[row[0]] = float(row[1])
    if (
        not isinstance(doc, dict)
        or not doc
        or not all(isinstance(v, int | float) and math.isfinite(v) and v >= 0 for v in doc.values())
    ):
        raise MonitorError(f"{path} holds no feature importances (non-negative numbers by name)")
    return {str(k): float(v) for k, v in doc.items()}


def _others(path: str, columns: dict[str, str], file_format: str) -> list[str]:
    with duckdb.connect() as con:
        described = con.execute(f"DESCRIBE SELECT * FROM {_READERS[file_format]}", [path])  # noqa: S608
        return [row[0] for row in described.fetchall() if row[0] not in columns.values()]


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def _format(path: str) -> str:
    suffix = os.path.basename(path).lower().rsplit(".", 1)[-1]
    return {"parquet": "parquet", "pq": "parquet", "json": "json", "jsonl": "json"}.get(
        suffix, "csv"
    )
