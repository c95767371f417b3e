"""The /drift report's ``outliers`` and ``multivariate`` sections, from the stored row scores.

Both tests are calibrated to the window's size and to the size of the baseline sample that
measured the scores, so that their false-alarm rate holds for any window (docs/drift.md):

- outliers: the count of rows over the baseline's threshold, against a beta-binomial (a binomial
  whose share is known only from the baseline's held-out rows);
- multivariate: the window's mean Mahalanobis distance (each row's clipped at the baseline's
  99.9th percentile), against the baseline's mean with the spread a mean of that many rows has.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import duckdb
import numpy as np

from ..stats.outliers import OutlierModel, number_key

__all__ = ["ALPHA", "multivariate_drift", "outlier_share", "score_sections"]

ALPHA = 0.001
"""The false-alarm rate of each test, per check of a window without drift."""
_TOP_ROWS = 10
_TOP_FEATURES = 3
_Z = 3.2905267314918945  # the two-sided normal quantile of ALPHA: stats.norm.isf(ALPHA / 2)


def outlier_share(model: OutlierModel, rows: int, count: int) -> dict[str, Any]:
    """The ``outliers`` verdict on ``count`` rows over the threshold among ``rows``."""
    from scipy import stats  # imported when first used: every worker imports this module

    held = max(model.rows, 1)
    seen = model.expected_share * held
    # P(at least ``count`` of ``rows``) when the share is as uncertain as the baseline left it
    tail = stats.betabinom.sf(count - 1, rows, seen + 0.5, held - seen + 0.5) if count else 1.0
    p_value = float(min(max(tail, 0.0), 1.0))
    return {
        "rows": rows,
        "count": count,
        "share": count / rows if rows else None,
        "expected_share": model.expected_share,
        "threshold": model.threshold,
        "p_value": p_value,
        "alpha": ALPHA,
        "detected": bool(rows and p_value < ALPHA),
    }


def multivariate_drift(model: OutlierModel, rows: int, mean: float | None) -> dict[str, Any]:
    """The ``multivariate`` verdict on a window of ``rows`` rows of mean clipped error ``mean``."""
    spread = model.score_std * math.sqrt(1 / max(rows, 1) + 1 / max(model.rows, 1))
    z = (mean - model.score_mean) / spread if mean is not None and spread > 0 else None
    return {
        "method": "pca_mahalanobis",
        "rows": rows,
        "mean_score": mean,
        "baseline_mean": model.score_mean,
        "lower": model.score_mean - _Z * spread,
        "upper": model.score_mean + _Z * spread,
        "z": z,
        "alpha": ALPHA,
        "drifted": bool(z is not None and abs(z) > _Z),
    }


def score_sections(
    cursor: Any, model: OutlierModel, start: datetime, end: datetime, min_rows: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``outliers`` and ``multivariate`` sections of the window [start, end)."""
    try:
        rows, count, mean = cursor.execute(
            "SELECT count(*), count(*) FILTER (WHERE outlier), avg(least(score, ?)) "
            "FROM row_scores WHERE ts >= ? AND ts < ?",
            [model.clip, start, end],
        ).fetchone()
    except duckdb.CatalogException:  # a store of an earlier version, opened read-only
        rows, count, mean = 0, 0, None
    outliers = outlier_share(model, int(rows), int(count or 0))
    multivariate = multivariate_drift(model, int(rows), mean)
    if rows < min_rows:
        outliers["detected"] = multivariate["drifted"] = False
        outliers["status"] = multivariate["status"] = "insufficient_data"
    else:
        outliers["status"] = "alert" if outliers["detected"] else "ok"
        multivariate["status"] = "alert" if multivariate["drifted"] else "ok"
    outliers["top"] = _most_unusual(cursor, model, start, end) if rows else []
    return outliers, multivariate


def _most_unusual(
    cursor: Any, model: OutlierModel, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The window's highest-scoring outlier rows, each with the features that weigh most."""
    top = cursor.execute(
        "SELECT request_id, row_index, score, ts FROM row_scores "
        "WHERE ts >= ? AND ts < ? AND outlier ORDER BY score DESC, ts DESC LIMIT ?",
        [start, end, _TOP_ROWS],
    ).fetchall()
    if not top:
        return []
    keys = {(r, i): n for n, (r, i, _, _) in enumerate(top)}
    values = cursor.execute(
        "SELECT f.request_id, f.row_index, f.name, f.type, f.num, f.str FROM features f "
        "JOIN (SELECT unnest(?::VARCHAR[]) AS request_id, unnest(?::INTEGER[]) AS row_index) k "
        "ON f.request_id = k.request_id AND f.row_index = k.row_index "
        "WHERE f.role = 'input' AND f.ts >= ? AND f.ts < ? AND f.name = ANY(?::VARCHAR[])",
        [[r for r, *_ in top], [i for _, i, *_ in top], start, end, list(model.names)],
    ).fetchall()
    p = len(model.numeric)
    numbers = np.full((len(top), p), np.nan)
    keyed: list[list[str | None]] = [[None] * len(model.categorical) for _ in top]
    position = {name: j for j, name in enumerate(model.names)}
    for request_id, row_index, name, kind, num, text in values:
        n, j = keys[request_id, row_index], position[name]
        if j < p:
            numbers[n, j] = num if kind == "number" and num is not None else np.nan
        elif kind == "string":
            keyed[n][j - p] = text
        elif kind == "boolean":
            keyed[n][j - p] = "true" if num == 1 else "false"
        elif kind == "number" and num is not None and math.isfinite(num):
            keyed[n][j - p] = number_key(num)
    parts = model.contributions(numbers, model.codes(keyed))
    listed = []
    for n, (request_id, row_index, score, ts) in enumerate(top):
        total = float(parts[n].sum()) or 1.0
        order = np.argsort(-parts[n])[:_TOP_FEATURES]
        listed.append(
            {
                "request_id": request_id,
                "row_index": row_index,
                "ts": ts.isoformat() + "Z",
                "score": float(score),
                "features": [
                    {"name": model.names[j], "contribution": float(parts[n, j]) / total}
                    for j in order
                    if parts[n, j] > 0
                ],
            }
        )
    return listed
