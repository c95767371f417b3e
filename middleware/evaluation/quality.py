"""Model quality from ground truth: labels joined with captured predictions, per time window.

The join, the class dictionary and the probability lookup run inside DuckDB; the metrics are
NumPy over the joined rows in prediction-time order, so buckets are slices and the error stream
goes to the change detector as it is. docs/evaluation.md explains every rule used here.
"""

from __future__ import annotations

import contextlib
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import numpy as np

from ..errors import MonitorError
from .changes import page_hinkley, rank_scores
from .class_codes import JoinedRows, class_rows
from .metrics import EPS, classification_metrics, regression_metrics
from .prediction_fields import OUTPUT_WINDOW, FieldChoice, choose_fields, output_fields
from .tally_report import tallies_beside, tallies_instead

__all__ = ["DEFAULT_MARGIN", "DEFAULT_REGRESSION_MARGIN", "evaluate"]

DEFAULT_MARGIN = 0.02
"""Accuracy drop (absolute) below the baseline's tolerated beyond sampling noise."""
DEFAULT_REGRESSION_MARGIN = 0.10
"""Relative rise of MAE or RMSE over the baseline's tolerated beyond sampling noise."""

Z = 2.326  # one-sided 99%: noise alone crosses a limit in about one check of a hundred
_TYPE = "CASE {} WHEN 'number' THEN 0 WHEN 'boolean' THEN 1 WHEN 'string' THEN 2 ELSE 3 END"


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
    expected: tuple[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
    margin: float = DEFAULT_MARGIN,
    regression_margin: float = DEFAULT_REGRESSION_MARGIN,
    min_labels: int = 30,
    model: str | None = None,
) -> dict[str, Any]:
    """The /evaluation report over the predictions of the last ``window_s`` seconds.

    A prediction is placed in time by its capture (``features.ts``) and the window is split
    into ``buckets`` equal parts. ``prediction``, ``probability`` (a field, or the name of a
    ``name[i]`` vector) and ``task`` (``classification`` or ``regression``) override what is
    inferred from the labels and predictions; before any label arrives, the task is the
    baseline's, or classification for string predictions. ``baseline_quality`` is the baseline's
    ``quality`` section and ``expected`` its prediction column's (name, dtype), which picks the
    output to read, as the outputs' datatypes in the model's ``metadata`` do. ``cursor`` is the
    caller's own; the temporary table made on it is dropped before returning. A store that
    cannot be read raises :class:`MonitorError`. ``model`` names the model whose requests
    ``cursor`` is scoped to, for the label tallies of that model (``docs/evaluation.md``).
    """
    moment = now or datetime.now(UTC)
    end = moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment
    span = {"start": end - timedelta(seconds=window_s), "end": end}
    report: dict[str, Any] = {
        "status": "no_labels",
        "evaluated_at": _iso(end),
        "task": None,
        "prediction_field": None,
        "prediction_reason": None,
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
        "metrics_source": None,
        "tallies": None,
    }
    try:
        fields = output_fields(cursor, span, buckets)
        name, dtype = expected or (None, None)
        if not fields:
            prior = _prior_task(baseline_quality, None)
            tallied = tallies_instead(
                cursor, span, prediction or name, task or prior, report, model or ""
            )
            if tallied is None:
                report["reasons"].append("No predictions were captured in the window.")
                return report
            spreads = tallied.spreads() if report["task"] == "regression" else {}
            return _judged(report, spreads, baseline_quality, min_labels, margin, regression_margin)
        declared = {o["name"]: o["datatype"] for o in (metadata or {}).get("outputs", [])}
        choice = choose_fields(fields, prediction, probability, name, dtype, declared)
        report["notes"] = choice.notes
        if choice.prediction is None:
            report["status"] = "unknown_prediction"
            report["reasons"].append(choice.notes[-1])
            return report
        report["prediction_field"] = choice.prediction + ("[*]" if choice.argmax else "")
        report["prediction_reason"] = choice.reason
        prior = _prior_task(baseline_quality, fields.get(choice.prediction))
        rows, threshold = _joined(cursor, span, choice, task, prior, report)
        if not choice.argmax and len(rows.t):
            report["tallies"] = tallies_beside(
                cursor, span, choice.prediction, report["task"], threshold, model or ""
            )
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
    report["metrics_source"] = "rows"
    if labels < min_labels:
        report["status"] = "insufficient_labels"
        report["reasons"].append(f"{labels} labelled predictions; {min_labels} are needed.")
        return report
    errors = (rows.y != rows.p).astype(np.float64) if report["task"] == "classification" else None
    if errors is None:
        errors = np.abs(rows.p - rows.y)
    report["change"] = _change(errors, rows.t, report["task"])
    spreads = {"mae": float(errors.std()), "rmse": float((errors**2).std())}
    return _judged(report, spreads, baseline_quality, min_labels, margin, regression_margin)


def _judged(
    report: dict[str, Any],
    spreads: dict[str, float],
    baseline_quality: dict[str, Any] | None,
    min_labels: int,
    margin: float,
    regression_margin: float,
) -> dict[str, Any]:
    """The status: enough labels, and quality within the baseline's limits."""
    labels = report["metrics"]["labels"]
    if labels < min_labels:
        report["status"] = "insufficient_labels"
        report["reasons"].append(f"{labels} labelled predictions; {min_labels} are needed.")
        return report
    if baseline_quality:
        report["baseline"], reasons = _degradation(
            report["task"],
            report["metrics"],
            labels,
            spreads,
            baseline_quality,
            margin,
            regression_margin,
        )
        report["reasons"] += reasons
        report["degraded"] = bool(reasons)
    report["status"] = "degraded" if report["degraded"] else "ok"
    return report


def _joined(
    cursor: duckdb.DuckDBPyConnection,
    span: dict[str, datetime],
    choice: FieldChoice,
    task: str | None,
    prior: str | None,
    report: dict[str, Any],
) -> tuple[JoinedRows, bool]:
    """Join labels with the window's predictions (temp table ``iw_eval``); fetch the rows, and
    whether the prediction is a probability cut at 0.5."""
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
            f"WHERE {OUTPUT_WINDOW} AND name = $probability AND type = 'number') q "
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
        f"WHERE p.{OUTPUT_WINDOW.replace(' AND ', ' AND p.')} AND p.name = $name "
        "AND l.received_at >= $start - INTERVAL 1 HOUR",
        params,
    )
    columns = "rowid AS i, t, received, pk, pnum, lk, lnum" + (", q" if choice.scalar else "")
    data = cursor.execute(f"SELECT {columns} FROM iw_eval").fetchnumpy()  # noqa: S608
    if task is None and len(data["t"]) == 0:
        task = prior  # no label yet to tell the task by
    kind, threshold = _task(data, task, choice, report["notes"])
    report["task"] = kind
    if kind == "regression":
        ok = (data["pk"] <= 1) & (data["lk"] <= 1) & np.isfinite(data["pnum"] + data["lnum"])
        rows = JoinedRows(data["t"][ok], data["received"][ok], data["lnum"][ok], data["pnum"][ok])
    else:
        rows = class_rows(cursor, span, data, choice, threshold, report)
    order = np.argsort(rows.t, kind="stable")
    rows.t, rows.y, rows.p = rows.t[order], rows.y[order], rows.p[order]
    rows.delay_s = (rows.delay_s[order] - rows.t) / 1e6
    if rows.proba is not None:
        rows.proba = rows.proba[order]
    return rows, threshold


def _prior_task(quality: dict[str, Any] | None, served: dict | None) -> str | None:
    """The task before any label: the baseline's, or classification for string predictions."""
    known = (quality or {}).get("task")
    if known in ("classification", "regression"):
        return known
    return "classification" if served and served["strings"] else None


def _task(
    data: dict[str, np.ndarray], task: str | None, choice: FieldChoice, notes: list[str]
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


def _fill(
    report: dict[str, Any],
    rows: JoinedRows,
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
    n: int,
    spreads: dict[str, float],
    quality: dict[str, Any],
    margin: float = DEFAULT_MARGIN,
    regression_margin: float = DEFAULT_REGRESSION_MARGIN,
) -> tuple[dict[str, Any], list[str]]:
    """Compare the window with the baseline's quality; return the report's baseline and reasons.

    Accuracy is degraded below ``base - margin - Z * se``, MAE or RMSE above
    ``base * (1 + regression_margin) + Z * se``, where ``se`` is the standard error of the
    difference between the window's figure (n labels) and the baseline's (its rows), from
    ``spreads``: the standard deviations of the absolute (``mae``) and squared (``rmse``) errors.
    """
    base_rows = quality.get("rows") or 0
    shared = {k: v for k, v in quality.items() if isinstance(v, int | float) and k in metrics}
    out: dict[str, Any] = {"task": quality.get("task"), "rows": base_rows, **shared, "limits": {}}
    if quality.get("task") not in (None, task):
        return out, []
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
        base, spread = float(quality[key]), spreads[key]
        se = spread * math.sqrt(inverse)
        if squared:  # delta method: sd(sqrt(mean)) = sd(mean) / (2 sqrt(mean))
            se /= 2 * max(metrics["rmse"], EPS)
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
