"""Joined labels and predictions as class codes, with the probabilities the responses gave.

Predictions and labels may be numbers, booleans or strings, and a probability may be one
field or a vector of ``name[i]`` fields: all become integer codes into one sorted class list,
so that the metrics are ``bincount`` and indexing. String keys are coded inside DuckDB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import numpy as np

from ..baseline.build import number_key_sql
from .prediction_fields import OUTPUT_WINDOW, FieldChoice

__all__ = ["JoinedRows", "class_rows", "sorted_classes"]


def _key_sql(kind: str, num: str, text: str) -> str:
    """A class key: the string itself, or a number's text the way the baseline writes it."""
    numeric = f"{kind} <= 1 AND isfinite({num})"
    return f"CASE WHEN {kind} = 2 THEN {text} WHEN {numeric} THEN {number_key_sql(num)} END"


_PKEY, _LKEY = _key_sql("pk", "pnum", "pstr"), _key_sql("lk", "lnum", "lstr")
_THRESHOLD_PKEY = "CASE WHEN isfinite(pnum) THEN CASE WHEN pnum >= 0.5 THEN '1' ELSE '0' END END"


@dataclass(slots=True)
class JoinedRows:
    """Joined rows in prediction-time order."""

    t: np.ndarray  # prediction time, epoch microseconds
    delay_s: np.ndarray  # label delay; the label's arrival (epoch microseconds) until sorted
    y: np.ndarray  # class codes, or label values
    p: np.ndarray
    classes: list[str] = field(default_factory=list)
    proba: np.ndarray | None = None  # n x classes, NaN where the response had none


def class_rows(
    cursor: duckdb.DuckDBPyConnection,
    span: dict[str, datetime],
    data: dict[str, np.ndarray],
    choice: FieldChoice,
    threshold: bool,
    report: dict[str, Any],
) -> JoinedRows:
    """Class codes, and probabilities where the response has them, of the joined rows."""
    notes, n = report["notes"], len(data["t"])
    pk, pnum = data["pk"], data["pnum"]
    if threshold:
        pk, pnum = np.where(np.isfinite(pnum), 0, 3), (pnum >= 0.5).astype(np.float64)
    if choice.argmax:  # the predicted class comes from the probabilities, below
        pk = np.full_like(pk, 3)
    if np.any(pk == 2) or np.any(data["lk"] == 2):
        pkey = None if choice.argmax else _THRESHOLD_PKEY if threshold else _PKEY
        classes, p, y = _string_codes(cursor, n, pkey, data["i"])
    else:
        classes, p, y = _number_codes(pk, pnum, data["lk"], data["lnum"])
    slots = len(choice.vector)
    slot_keys: list[str] | None = None
    if threshold:
        classes, p, y = _with_classes(classes, p, y, {"0", "1"})
    elif slots:
        present = {classes[c] for c in np.unique(np.concatenate([p[p >= 0], y[y >= 0]]))}
        if present <= {str(i) for i in range(slots)}:
            slot_keys = [str(i) for i in range(slots)]
            classes, p, y = _with_classes(classes, p, y, set(slot_keys))
        elif len(present) == slots:
            slot_keys = sorted_classes(present)
        else:
            notes.append(f"{slots} probabilities per row but {len(present)} classes; not used.")
    code = {key: c for c, key in enumerate(classes)}
    rows = JoinedRows(data["t"], data["received"], y, p, classes)
    if threshold:
        rows.proba = np.column_stack([1.0 - data["pnum"], data["pnum"]])
        report["probability_field"] = choice.prediction
    elif slot_keys is not None:
        found = _probabilities(cursor, span, choice.vector, data["i"])
        rows.proba = np.zeros((n, len(classes)))
        rows.proba[:, [code[key] for key in slot_keys]] = found
        rows.proba[np.isnan(found).any(axis=1)] = np.nan
        if choice.argmax:
            best = np.argmax(np.nan_to_num(found, nan=-1.0), axis=1)
            rows.p = np.array([code[key] for key in slot_keys])[best]
            rows.p[np.isnan(found).all(axis=1)] = -1
        report["probability_field"] = choice.vector[0].rsplit("[", 1)[0] + "[*]"
    elif choice.scalar and len(classes) == 2:
        score = data["q"]
        agree = np.nanmean((score >= 0.5) == (p == 1)) if n else 1.0
        if agree < 0.1:  # it sides with the other class throughout: it is that class's
            score = 1.0 - score
            notes.append(f"{choice.scalar} is read as the probability of {classes[0]!r}.")
        elif agree < 0.9 and np.nanmin(score, initial=1.0) >= 0.5:
            # Every score is at least 0.5 and does not side with the predicted class: it is the
            # predicted class's confidence, so class 1's probability is its complement for 0s.
            score = np.where(p == 1, score, 1.0 - score)
            notes.append(f"{choice.scalar} is read as the confidence of the predicted class.")
        rows.proba = np.column_stack([1.0 - score, score])
        report["probability_field"] = choice.scalar
    elif choice.scalar:
        notes.append(f"{choice.scalar} is one probability for {len(classes)} classes; not used.")
    keep = (rows.p >= 0) & (rows.y >= 0)
    if not keep.all():
        rows.t, rows.delay_s, rows.y, rows.p = (
            rows.t[keep],
            rows.delay_s[keep],
            y[keep],
            rows.p[keep],
        )
        rows.proba = rows.proba[keep] if rows.proba is not None else None
    return rows


def _number_codes(
    pk: np.ndarray, pnum: np.ndarray, lk: np.ndarray, lnum: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Classes and codes (-1: none) when predictions and labels are numbers or booleans."""
    p_ok = (pk <= 1) & np.isfinite(pnum)
    y_ok = (lk <= 1) & np.isfinite(lnum)
    values = np.concatenate([pnum[p_ok], lnum[y_ok]])
    small = values.size and np.all(values == np.trunc(values)) and values.min() >= 0
    if small and values.max() < 1_000_000:  # class numbers 0..k: a table lookup, no sort
        seen = np.zeros(int(values.max()) + 1, dtype=bool)
        seen[values.astype(np.int64)] = True
        table = np.cumsum(seen) - 1
        unique = np.flatnonzero(seen).astype(np.float64)
        p = np.where(p_ok, table[np.where(p_ok, pnum, 0).astype(np.int64)], -1)
        y = np.where(y_ok, table[np.where(y_ok, lnum, 0).astype(np.int64)], -1)
    else:
        unique, inverse = np.unique(values, return_inverse=True)
        p, y = np.full(pk.size, -1), np.full(lk.size, -1)
        p[p_ok], y[y_ok] = inverse[: p_ok.sum()], inverse[p_ok.sum() :]
    return [_number_key(v) for v in unique], p, y


def _with_classes(
    classes: list[str], p: np.ndarray, y: np.ndarray, wanted: set[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Add classes no row has (a probability vector's), keeping the order and the codes right."""
    if wanted <= set(classes):
        return classes, p, y
    merged = sorted_classes(set(classes) | wanted)
    remap = np.array([merged.index(key) for key in classes] + [-1], dtype=np.int64)
    return merged, remap[p], remap[y]  # code -1 stays -1 through the appended entry


def _number_key(value: float) -> str:
    return str(int(value)) if value == math.trunc(value) and abs(value) < 1e15 else repr(value)


def _string_codes(
    cursor: duckdb.DuckDBPyConnection, n: int, pkey: str | None, at: np.ndarray
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Classes and codes (-1: none) through a dictionary of the keys, inside DuckDB."""
    pkey = pkey or "NULL"
    found = cursor.execute(
        f"SELECT DISTINCT key FROM (SELECT {pkey} AS key FROM iw_eval UNION ALL "  # noqa: S608
        f"SELECT {_LKEY} FROM iw_eval) WHERE key IS NOT NULL"
    ).fetchall()
    classes = sorted_classes({str(row[0]) for row in found})
    cursor.register(
        "iw_classes",
        {"key": np.array(classes, dtype=object), "code": np.arange(len(classes), dtype=np.int64)},
    )
    try:
        data = cursor.execute(
            "SELECT e.rowid AS i, coalesce(pc.code, -1) AS p, coalesce(lc.code, -1) AS y "  # noqa: S608
            f"FROM iw_eval e LEFT JOIN iw_classes pc ON pc.key = {pkey} "
            f"LEFT JOIN iw_classes lc ON lc.key = {_LKEY}"
        ).fetchnumpy()
    finally:
        cursor.unregister("iw_classes")
    p, y = np.full(n, -1), np.full(n, -1)
    p[data["i"]], y[data["i"]] = data["p"], data["y"]
    return classes, p[at], y[at]


def sorted_classes(keys: set[str]) -> list[str]:
    """Classes in scikit-learn's order: numerically when every key is a number."""
    try:
        return sorted(keys, key=float)
    except ValueError:
        return sorted(keys)


def _probabilities(
    cursor: duckdb.DuckDBPyConnection, span: dict[str, datetime], names: list[str], at: np.ndarray
) -> np.ndarray:
    """Values of output fields ``names`` for the ``iw_eval`` rows ``at``: len(at) x len(names)."""
    params: dict[str, Any] = {**span, **{f"n{i}": name for i, name in enumerate(names)}}
    listed = ", ".join(f"$n{i}" for i in range(len(names)))
    data = cursor.execute(
        f"SELECT e.rowid AS i, list_position([{listed}], q.name) - 1 AS slot, q.num "  # noqa: S608
        "FROM iw_eval e JOIN features q ON hash(q.request_id, q.row_index) = e.h AND q.ts = e.ts "
        f"WHERE q.{OUTPUT_WINDOW.replace(' AND ', ' AND q.')} AND q.name IN ({listed}) "
        "AND q.type = 'number'",
        params,
    ).fetchnumpy()
    full = np.full((int(at.max(initial=-1)) + 1, len(names)), np.nan)
    full[data["i"], data["slot"]] = data["num"]
    return full[at]
