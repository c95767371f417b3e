"""Model quality from ground truth: labels joined with captured predictions, per time window.

The join, the class dictionary and the probability lookup run inside DuckDB; the metrics are
NumPy over the joined rows in prediction-time order, so buckets are slices and the error stream
goes to the change detector as it is. docs/evaluation.md explains every rule used here.
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np

from ._baseline import number_key_sql
from ._changes import page_hinkley, rank_scores
from ._errors import MonitorError

__all__ = [
    "DEFAULT_MARGIN",
    "DEFAULT_REGRESSION_MARGIN",
    "PREDICTION_NAMES",
    "classification_metrics",
    "evaluate",
    "regression_metrics",
]

DEFAULT_MARGIN = 0.02
"""Accuracy drop (absolute) below the baseline's tolerated beyond sampling noise."""
DEFAULT_REGRESSION_MARGIN = 0.10
"""Relative rise of MAE or RMSE over the baseline's tolerated beyond sampling noise."""
PREDICTION_NAMES = frozenset({"prediction", "predictions", "label", "class", "y", "output"})
"""Last name segments that mark an output field as the prediction."""

Z = 2.326  # one-sided 99%: noise alone crosses a limit in about one check of a hundred
_EPS = float(np.finfo(np.float64).eps)  # scikit-learn's clip for log loss and MAPE
_PROBABILITY = re.compile(r"prob|score|confidence", re.IGNORECASE)
_SLOT = re.compile(r"^(.*)\[(\d+)\]$")
_MAX_SLOTS = 100  # a longer probability vector is not read: n x k floats in memory
_MAX_PER_CLASS = 100  # per-class figures listed, by support
_WINDOW = "role = 'output' AND ts >= $start AND ts < $end"


_TYPE = "CASE {} WHEN 'number' THEN 0 WHEN 'boolean' THEN 1 WHEN 'string' THEN 2 ELSE 3 END"


def _key_sql(kind: str, num: str, text: str) -> str:
    """A class key: the string itself, or a number's text the way the baseline writes it."""
    numeric = f"{kind} <= 1 AND isfinite({num})"
    return f"CASE WHEN {kind} = 2 THEN {text} WHEN {numeric} THEN {number_key_sql(num)} END"


_PKEY, _LKEY = _key_sql("pk", "pnum", "pstr"), _key_sql("lk", "lnum", "lstr")
_THRESHOLD_PKEY = "CASE WHEN isfinite(pnum) THEN CASE WHEN pnum >= 0.5 THEN '1' ELSE '0' END END"


@dataclass(slots=True)
class _Choice:
    prediction: str | None = None
    vector: list[str] = field(default_factory=list)  # probability fields, by class slot
    scalar: str | None = None  # a single probability field
    argmax: bool = False  # the prediction is the vector's most likely slot
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class _Rows:
    """Joined rows in prediction-time order."""

    t: np.ndarray  # prediction time, epoch microseconds
    delay_s: np.ndarray  # label delay; the label's arrival (epoch microseconds) until sorted
    y: np.ndarray  # class codes, or label values
    p: np.ndarray
    classes: list[str] = field(default_factory=list)
    proba: np.ndarray | None = None  # n x classes, NaN where the response had none


def evaluate(
    cursor: duckdb.DuckDBPyConnection,
    *,
    window_s: float,
    now: datetime | None = None,
    buckets: int = 12,
    prediction: str | None = None,
    probability: str | None = None,
    task: str | None = None,
    baseline_quality: dict[str, Any] | None = None,
    margin: float = DEFAULT_MARGIN,
    regression_margin: float = DEFAULT_REGRESSION_MARGIN,
    min_labels: int = 30,
) -> dict[str, Any]:
    """The /evaluation report over the predictions of the last ``window_s`` seconds.

    A prediction is placed in time by its capture (``features.ts``) and the window is split
    into ``buckets`` equal parts. ``prediction``, ``probability`` (a field, or the name of a
    ``name[i]`` vector) and ``task`` (``classification`` or ``regression``) override what is
    inferred. ``baseline_quality`` is the baseline's ``quality`` section. ``cursor`` is the
    caller's own; the temporary table made on it is dropped before returning. A store that
    cannot be read raises :class:`MonitorError`.
    """
    moment = now or datetime.now(UTC)
    end = moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    span = {"start": end - timedelta(seconds=window_s), "end": end}
    report: dict[str, Any] = {
        "status": "no_labels",
        "evaluated_at": _iso(end),
        "task": None,
        "prediction_field": None,
        "probability_field": None,
        "window": {"start": _iso(span["start"]), "end": _iso(end), "seconds": window_s},
        "coverage": None,
        "label_delay_s": {"p50": None, "p90": None},
        "metrics": None,
        "buckets": [],
        "baseline": None,
        "degraded": False,
        "reasons": [],
        "notes": [],
        "change": {"detected": False},
    }
    try:
        fields = _profile(cursor, span, buckets)
        if not fields:
            report["reasons"].append("No predictions were captured in the window.")
            return report
        choice = _choose(fields, prediction, probability)
        report["notes"] = choice.notes
        if choice.prediction is None:
            report["status"] = "unknown_prediction"
            report["reasons"].append(choice.notes[-1])
            return report
        report["prediction_field"] = choice.prediction + ("[*]" if choice.argmax else "")
        rows = _joined(cursor, span, choice, task, report)
        base = choice.vector[0] if choice.argmax else choice.prediction
        counts = fields[base]["buckets"] if base in fields else np.zeros(buckets, np.int64)
    except duckdb.Error as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise MonitorError(f"Evaluating the log store failed: {first}.") from exc
    finally:
        with contextlib.suppress(duckdb.Error):
            cursor.execute("DROP TABLE IF EXISTS temp.iw_eval")
    _fill(report, rows, counts, span, buckets)
    labels = len(rows.t)
    if labels == 0:
        report["reasons"].append("No labels have arrived for the window's predictions.")
        return report
    if labels < min_labels:
        report["status"] = "insufficient_labels"
        report["reasons"].append(f"{labels} labelled predictions; {min_labels} are needed.")
        return report
    errors = (rows.y != rows.p).astype(np.float64) if report["task"] == "classification" else None
    if errors is None:
        errors = np.abs(rows.p - rows.y)
    report["change"] = _change(errors, rows.t, report["task"])
    if baseline_quality:
        report["baseline"], reasons = _degradation(
            report["task"], report["metrics"], errors, baseline_quality, margin, regression_margin
        )
        report["reasons"] += reasons
        report["degraded"] = bool(reasons)
    report["status"] = "degraded" if report["degraded"] else "ok"
    return report


def _profile(
    cursor: duckdb.DuckDBPyConnection, span: dict[str, datetime], buckets: int
) -> dict[str, dict]:
    """Each output field of the window: rows per bucket, strings, numbers, range, integrality."""
    finite = "type = 'number' AND isfinite(num)"
    width = max((span["end"] - span["start"]).total_seconds() * 1e6 / buckets, 1.0)
    found = cursor.execute(
        "SELECT name, floor((epoch_us(ts) - epoch_us($start)) / $width)::BIGINT AS b, "  # noqa: S608
        f"count(*), count(*) FILTER (WHERE type = 'string'), count(*) FILTER (WHERE {finite}), "
        f"min(num) FILTER (WHERE {finite}), max(num) FILTER (WHERE {finite}), "
        f"bool_and(num = trunc(num)) FILTER (WHERE {finite}) "
        f"FROM features WHERE {_WINDOW} GROUP BY name, b",
        {**span, "width": width},
    ).fetchall()
    fields: dict[str, dict] = {}
    for name, bucket, rows, strings, numbers, low, high, integral in found:
        stats = fields.setdefault(
            name,
            {
                "buckets": np.zeros(buckets, dtype=np.int64),
                "strings": 0,
                "numbers": 0,
                "low": math.inf,
                "high": -math.inf,
                "integral": True,
            },
        )
        stats["buckets"][min(max(int(bucket), 0), buckets - 1)] += rows
        stats["strings"] += strings
        stats["numbers"] += numbers
        if numbers:
            stats["low"], stats["high"] = min(stats["low"], low), max(stats["high"], high)
            stats["integral"] = stats["integral"] and integral
    return fields


def _is_probability(stats: dict) -> bool:
    return stats["numbers"] > 0 and stats["low"] >= 0 and stats["high"] <= 1


def _choose(fields: dict[str, dict], prediction: str | None, probability: str | None) -> _Choice:
    """Which output field is the prediction and which the probability (docs: inference)."""
    choice = _Choice()
    vectors: dict[str, list[tuple[int, str]]] = {}
    for name in fields:
        if match := _SLOT.match(name):
            vectors.setdefault(match[1], []).append((int(match[2]), name))
    slots = {base: [n for _, n in sorted(v)] for base, v in vectors.items()}
    scalars = [n for n in fields if not _SLOT.match(n)]

    def leaf(name: str) -> str:
        return name.rsplit(".", 1)[-1].lower()

    def probable(name: str) -> bool:
        return bool(_PROBABILITY.search(leaf(name))) and _is_probability(fields[name])

    prob_vectors = [
        base
        for base, names in slots.items()
        if all(_is_probability(fields[n]) for n in names) and len(names) <= _MAX_SLOTS
    ]
    if prediction is not None:
        base = prediction.removesuffix("[*]")
        if prediction in fields:
            choice.prediction = prediction
        elif base in slots:
            choice.prediction, choice.argmax, choice.vector = base, True, slots[base]
        else:
            choice.notes.append(f"No output field {prediction!r} in the window.")
            return choice
    else:
        named = [n for n in scalars if leaf(n) in PREDICTION_NAMES]
        others = [n for n in scalars if not probable(n)]
        if len(named) == 1 or (not named and len(others) == 1):
            choice.prediction = named[0] if named else others[0]
        elif len(fields) == len(scalars) == 1:  # a single output field, whatever its name
            choice.prediction = scalars[0]
        elif not scalars and len(prob_vectors) == 1:
            base = prob_vectors[0]
            choice.prediction, choice.argmax, choice.vector = base, True, slots[base]
        else:
            listed = ", ".join(sorted(fields)[:10]) or "none"
            choice.notes.append(
                f"Cannot tell which output field is the prediction (output fields: {listed}); "
                "set the evaluation_prediction setting or ?prediction=."
            )
            return choice
    if choice.argmax:
        return choice
    if probability is not None:
        base = probability.removesuffix("[*]")
        if probability in fields:
            choice.scalar = probability
        elif base in slots:
            choice.vector = slots[base]
        else:
            choice.notes.append(f"No output field {probability!r} in the window.")
        return choice
    singles = [n for n in scalars if n != choice.prediction and probable(n)]
    vectors_named = [b for b in prob_vectors if _PROBABILITY.search(leaf(b))]
    if len(singles) == 1:
        choice.scalar = singles[0]
    elif not singles and len(vectors_named) == 1:
        choice.vector = slots[vectors_named[0]]
    elif singles or vectors_named:
        choice.notes.append("More than one output field could be the probability; none is used.")
    return choice


def _joined(
    cursor: duckdb.DuckDBPyConnection,
    span: dict[str, datetime],
    choice: _Choice,
    task: str | None,
    report: dict[str, Any],
) -> _Rows:
    """Join labels with the window's predictions (temp table ``iw_eval``); fetch the rows."""
    params: dict[str, Any] = {
        **span,
        "name": choice.vector[0] if choice.argmax else choice.prediction,
    }
    probability = keys = left = ""
    if choice.scalar:
        params["probability"] = choice.scalar
        probability = ", coalesce(q.num, 'nan'::DOUBLE) AS q"
        # The probability is the same capture's (same ts), so a 64-bit hash of the row key is
        # as good as the key here and joins several times faster.
        left = (
            "LEFT JOIN (SELECT hash(request_id, row_index) AS h, ts, num FROM features "  # noqa: S608
            f"WHERE {_WINDOW} AND name = $probability AND type = 'number') q "
            "ON q.h = hash(p.request_id, p.row_index) AND q.ts = p.ts "
        )
    if choice.vector:
        keys = ", hash(p.request_id, p.row_index) AS h, p.ts"
    # A label is received after its prediction is made, so older labels cannot match; the hour
    # of slack covers a clock set back.
    cursor.execute(
        "CREATE OR REPLACE TEMP TABLE iw_eval AS SELECT epoch_us(p.ts) AS t, "  # noqa: S608
        f"epoch_us(l.received_at) AS received, {_TYPE.format('p.type')} AS pk, "
        f"coalesce(p.num, 'nan'::DOUBLE) AS pnum, p.str AS pstr, {_TYPE.format('l.type')} AS lk, "
        f"coalesce(l.num, 'nan'::DOUBLE) AS lnum, l.str AS lstr{probability}{keys} "
        "FROM features p JOIN labels l ON l.request_id = p.request_id "
        f"AND l.row_index = p.row_index {left}"
        f"WHERE p.{_WINDOW.replace(' AND ', ' AND p.')} AND p.name = $name "
        "AND l.received_at >= $start - INTERVAL 1 HOUR",
        params,
    )
    columns = "rowid AS i, t, received, pk, pnum, lk, lnum" + (", q" if choice.scalar else "")
    data = cursor.execute(f"SELECT {columns} FROM iw_eval").fetchnumpy()  # noqa: S608
    kind, threshold = _task(data, task, choice, report["notes"])
    report["task"] = kind
    if kind == "regression":
        ok = (data["pk"] <= 1) & (data["lk"] <= 1) & np.isfinite(data["pnum"] + data["lnum"])
        rows = _Rows(data["t"][ok], data["received"][ok], data["lnum"][ok], data["pnum"][ok])
    else:
        rows = _classes(cursor, span, data, choice, threshold, report)
    order = np.argsort(rows.t, kind="stable")
    rows.t, rows.y, rows.p = rows.t[order], rows.y[order], rows.p[order]
    rows.delay_s = (rows.delay_s[order] - rows.t) / 1e6
    if rows.proba is not None:
        rows.proba = rows.proba[order]
    return rows


def _task(
    data: dict[str, np.ndarray], task: str | None, choice: _Choice, notes: list[str]
) -> tuple[str, bool]:
    """The task, and whether a [0, 1] prediction is cut at 0.5 into classes 0 and 1."""
    pk, pnum, lk, lnum = data["pk"], data["pnum"], data["lk"], data["lnum"]
    numbers = pnum[(pk == 0) & np.isfinite(pnum)]
    labels = lnum[(lk <= 1) & np.isfinite(lnum)]
    p_integral = bool(np.all(numbers == np.trunc(numbers)))
    l_integral = bool(np.all(labels == np.trunc(labels)))
    l_binary = labels.size > 0 and bool(np.all((labels == 0) | (labels == 1)))
    unit = numbers.size > 0 and not p_integral and numbers.min() >= 0 and numbers.max() <= 1
    if task not in (None, "classification", "regression"):
        notes.append(f"Unknown task {task!r}; it is inferred instead.")
        task = None
    if task is None:
        text = choice.argmax or bool(np.any(pk == 1) or np.any(pk == 2) or np.any(lk == 2))
        integral = numbers.size > 0 and p_integral and l_integral
        task = "classification" if text or integral or (unit and l_binary) else "regression"
    threshold = task == "classification" and not choice.argmax and unit and l_binary
    threshold = threshold and not np.any(lk == 2)
    if threshold:
        notes.append(f"{choice.prediction} is read as the probability of class 1 (cut at 0.5).")
    return task, threshold


def _classes(
    cursor: duckdb.DuckDBPyConnection,
    span: dict[str, datetime],
    data: dict[str, np.ndarray],
    choice: _Choice,
    threshold: bool,
    report: dict[str, Any],
) -> _Rows:
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
            slot_keys = _sorted(present)
        else:
            notes.append(f"{slots} probabilities per row but {len(present)} classes; not used.")
    code = {key: c for c, key in enumerate(classes)}
    rows = _Rows(data["t"], data["received"], y, p, classes)
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
    merged = _sorted(set(classes) | wanted)
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
    classes = _sorted({str(row[0]) for row in found})
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


def _sorted(keys: set[str]) -> list[str]:
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
        f"WHERE q.{_WINDOW.replace(' AND ', ' AND q.')} AND q.name IN ({listed}) "
        "AND q.type = 'number'",
        params,
    ).fetchnumpy()
    full = np.full((int(at.max(initial=-1)) + 1, len(names)), np.nan)
    full[data["i"], data["slot"]] = data["num"]
    return full[at]


def classification_metrics(
    y: np.ndarray,
    p: np.ndarray,
    classes: list[str],
    proba: np.ndarray | None = None,
    *,
    per_class: bool = True,
) -> dict[str, Any]:
    """Accuracy, macro and per-class precision, recall and F1, log loss and ROC AUC.

    ``y`` and ``p`` are codes into ``classes``; ``proba`` (rows x classes) the predicted
    probabilities, NaN where unknown. As scikit-learn: the macro average is over the classes
    present in ``y`` or ``p``, and a ratio with nothing to divide is 0.
    """
    width = len(classes)
    support = np.bincount(y, minlength=width)
    predicted = np.bincount(p, minlength=width)
    hits = np.bincount(y[y == p], minlength=width)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, hits / predicted, 0.0)
        recall = np.where(support > 0, hits / support, 0.0)
        total = precision + recall
        f1 = np.where(total > 0, 2 * precision * recall / total, 0.0)
    present = (support > 0) | (predicted > 0)
    out: dict[str, Any] = {
        "labels": int(y.size),
        "accuracy": float(hits.sum() / y.size),
        "macro_precision": float(precision[present].mean()),
        "macro_recall": float(recall[present].mean()),
        "macro_f1": float(f1[present].mean()),
        "log_loss": None,
        "roc_auc": None,
    }
    if proba is not None:
        known = ~np.isnan(proba).any(axis=1)
        out.update(_probability_metrics(y[known], proba[known], support[support > 0].size))
    if per_class:
        top = np.argsort(-support, kind="stable")[: min(width, _MAX_PER_CLASS)]
        out["per_class"] = {
            classes[c]: {
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "support": int(support[c]),
            }
            for c in sorted(top)
            if present[c]
        }
    return out


def _probability_metrics(y: np.ndarray, proba: np.ndarray, seen: int) -> dict[str, float | None]:
    if y.size == 0:
        return {}
    chosen = np.clip(proba[np.arange(y.size), y], _EPS, 1 - _EPS)
    out: dict[str, float | None] = {"log_loss": float(-np.log(chosen).mean())}
    if proba.shape[1] == 2:  # binary: the greater class is the positive one
        out["roc_auc"] = _auc(proba[:, 1], y == 1)
    elif seen > 2:  # one-vs-rest, averaged over the classes present
        scores = [_auc(proba[:, c], y == c) for c in np.unique(y)]
        valid = [s for s in scores if s is not None]
        out["roc_auc"] = float(np.mean(valid)) if valid else None
    return out


def _auc(score: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC AUC as the Mann-Whitney statistic: average ranks of the positives, ties counted half."""
    pos = int(positive.sum())
    neg = positive.size - pos
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(score)  # ties are grouped below, so their order does not matter
    ranked = score[order]
    starts = np.flatnonzero(np.r_[True, ranked[1:] != ranked[:-1]])
    ends = np.r_[starts[1:], ranked.size]
    hits = np.add.reduceat(positive[order].astype(np.int64), starts)
    rank_sum = float(np.dot(hits, (starts + ends + 1) / 2.0))
    return (rank_sum - pos * (pos + 1) / 2) / (pos * neg)


def regression_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """MAE, RMSE, MAPE and R2 as scikit-learn computes them (R2 of constant labels: 1 or 0)."""
    error = p - y
    sse = float(np.dot(error, error))
    sst = float(((y - y.mean()) ** 2).sum())
    return {
        "labels": int(y.size),
        "mae": float(np.abs(error).mean()),
        "rmse": math.sqrt(sse / y.size),
        "mape": float((np.abs(error) / np.maximum(np.abs(y), _EPS)).mean()),
        "r2": 1.0 - sse / sst if sst > 0 else (1.0 if sse == 0 else 0.0),
    }


def _fill(
    report: dict[str, Any],
    rows: _Rows,
    counts: np.ndarray,
    span: dict[str, datetime],
    buckets: int,
) -> None:
    """Window totals, coverage, delays, metrics of the window and of each bucket."""
    n = len(rows.t)
    report["window"] |= {"predictions": int(counts.sum()), "labels": n}
    report["coverage"] = n / int(counts.sum()) if counts.sum() else None
    if n == 0:
        return
    p50, p90 = np.percentile(rows.delay_s, [50, 90])
    report["label_delay_s"] = {"p50": float(p50), "p90": float(p90)}

    def metrics(part: slice, whole: bool) -> dict[str, Any]:
        if report["task"] == "regression":
            return regression_metrics(rows.y[part], rows.p[part])
        proba = None if rows.proba is None else rows.proba[part]
        return classification_metrics(
            rows.y[part], rows.p[part], rows.classes, proba, per_class=whole
        )

    report["metrics"] = metrics(slice(None), True)
    start_us = span["start"].replace(tzinfo=UTC).timestamp() * 1e6
    width = (span["end"] - span["start"]).total_seconds() * 1e6 / buckets
    index = np.clip(((rows.t - start_us) // width).astype(np.int64), 0, buckets - 1)
    bounds = np.searchsorted(index, np.arange(buckets + 1))
    for b in range(buckets):
        lo, hi = int(bounds[b]), int(bounds[b + 1])
        report["buckets"].append(
            {
                "start": _iso(span["start"] + timedelta(microseconds=width * b)),
                "end": _iso(span["start"] + timedelta(microseconds=width * (b + 1))),
                "predictions": int(counts[b]),
                "labels": hi - lo,
                "coverage": (hi - lo) / int(counts[b]) if counts[b] else None,
                "metrics": metrics(slice(lo, hi), False) if hi > lo else None,
            }
        )


def _change(errors: np.ndarray, t: np.ndarray, task: str) -> dict[str, Any]:
    """Page-Hinkley on the error stream: 0/1 errors, or the ranks of absolute errors."""
    stream = errors if task == "classification" else rank_scores(errors)
    found = page_hinkley(stream)
    what = "error_rate" if task == "classification" else "mae"
    out: dict[str, Any] = {"detected": found is not None, "method": "page_hinkley"}
    if found is None:
        return out
    return out | {
        "at": _iso_us(int(t[found.row])),
        "row": found.row,
        "detected_at": _iso_us(int(t[found.detected_row])),
        "detected_row": found.detected_row,
        f"{what}_before": float(errors[: found.row].mean()) if found.row else None,
        f"{what}_after": float(errors[found.row :].mean()),
    }


def _degradation(
    task: str,
    metrics: dict[str, Any],
    errors: np.ndarray,
    quality: dict[str, Any],
    margin: float = DEFAULT_MARGIN,
    regression_margin: float = DEFAULT_REGRESSION_MARGIN,
) -> tuple[dict[str, Any], list[str]]:
    """Compare the window with the baseline's quality; return the report's baseline and reasons.

    Accuracy is degraded below ``base - margin - Z * se``, MAE or RMSE above
    ``base * (1 + regression_margin) + Z * se``, where ``se`` is the standard error of the
    difference between the window's figure (n labels) and the baseline's (its rows).
    """
    base_rows = quality.get("rows") or 0
    shared = {k: v for k, v in quality.items() if isinstance(v, int | float) and k in metrics}
    out: dict[str, Any] = {"task": quality.get("task"), "rows": base_rows, **shared, "limits": {}}
    if quality.get("task") not in (None, task):
        return out, []
    n = errors.size
    inverse = 1.0 / n + (1.0 / base_rows if base_rows else 0.0)
    reasons: list[str] = []
    checks: list[tuple[str, float, float, bool]] = []
    if task == "classification" and isinstance(quality.get("accuracy"), int | float):
        base = float(quality["accuracy"])
        held = min(max(base - margin, 0.0), 1.0)  # the worst accuracy still accepted
        se = math.sqrt(held * (1 - held) / n + (base * (1 - base) / base_rows if base_rows else 0))
        checks.append(("accuracy", base, base - margin - Z * se, False))
    for key, squared in (("mae", False), ("rmse", True)):
        if task != "regression" or not isinstance(quality.get(key), int | float):
            continue
        base, spread = float(quality[key]), float((errors**2 if squared else errors).std())
        se = spread * math.sqrt(inverse)
        if squared:  # delta method: sd(sqrt(mean)) = sd(mean) / (2 sqrt(mean))
            se /= 2 * max(metrics["rmse"], _EPS)
        checks.append((key, base, base * (1 + regression_margin) + Z * se, True))
    for key, base, limit, higher_is_worse in checks:
        value = metrics[key]
        out["limits"][key] = limit
        if (value > limit) if higher_is_worse else (value < limit):
            side = "above" if higher_is_worse else "below"
            reasons.append(
                f"{key} {value:.4g} over {n} labels is {side} its limit {limit:.4g} "
                f"(baseline {base:.4g}, margin and {Z} standard errors)."
            )
    return out, reasons


def _iso(moment: datetime) -> str:
    return moment.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")


def _iso_us(micros: int) -> str:
    return _iso(datetime(1970, 1, 1) + timedelta(microseconds=micros))
