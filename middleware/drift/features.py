"""A feature's distribution test: the window's bins against the baseline's, by its method.

:func:`evaluate_feature` builds the two aligned histograms (docs/drift.md, "Bins"), scores them
with the feature's method, compares the score with the larger of the method's floor and the
noise threshold for the window's size, and returns the report entry with the schema anomalies.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from ..baseline.file import FeatureBaseline
from ..baseline.window import CategoricalWindow, NumericWindow
from ..stats.statistics import (
    DEFAULT_THRESHOLDS,
    js_distance,
    noise_threshold,
    psi,
    wasserstein_binned,
)
from .anomalies import feature_anomalies, rounded

__all__ = ["evaluate_feature"]


def evaluate_feature(
    fb: FeatureBaseline, rows: int, types: dict[str, int], window: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One feature's report entry and schema anomalies, from its window counts.

    ``rows`` is the window's row count, ``types`` the feature's values per type and ``window``
    what :func:`._drift_window.numeric_counts` or :func:`._drift_window.categorical_counts`
    found (None: no values).
    """
    present = sum(n for t, n in types.items() if t != "null")
    same_type = types.get(fb.dtype, 0)
    missing = max(rows - present, 0)
    other_types = present - same_type
    base = fb.bin_counts()
    entry: dict[str, Any] = {"kind": fb.kind, "method": fb.method, "rows": rows}
    if fb.kind == "numeric":
        w = window if window is not None else NumericWindow(np.zeros(len(fb.counts)))
        current = np.asarray(
            [*w.counts, w.below, w.above, missing, w.nan + w.inf + other_types], dtype=float
        )
        centers = _centers(fb, w)
        k = len(fb.counts)
        scale = fb.std if fb.std and fb.std > 0 else max(abs(fb.mean or 0.0), 1.0)
        value_bins = slice(0, k + 2)
        wasserstein = wasserstein_binned(base[value_bins], current[value_bins], centers, scale)
    else:
        w = window if window is not None else CategoricalWindow(np.zeros(len(fb.counts)))
        other, unseen = (w.outside, 0) if not fb.complete else (0, w.outside)
        invalid = other_types + w.non_finite
        current = np.asarray([*w.counts, other, unseen, missing, invalid], dtype=float)
    if fb.method == "jensenshannon":
        score = js_distance(base, current)
        noise = noise_threshold("jensenshannon", base, rows, fb.rows)
    elif fb.method == "psi":
        score = psi(base, current)
        noise = noise_threshold("psi", base, rows, fb.rows)
    else:
        score = wasserstein
        k = len(fb.counts)
        noise = noise_threshold(
            "wasserstein", base[:k], rows, fb.rows, centers=centers[:k], scale=scale
        )
    threshold = max(fb.threshold or DEFAULT_THRESHOLDS[fb.method], noise)
    entry |= {"score": rounded(score), "threshold": rounded(threshold)}
    entry["drifted"] = bool(present > 0 and score > threshold)
    if fb.kind == "numeric":
        entry["wasserstein"] = rounded(wasserstein)
    entry["psi"] = rounded(psi(base, current))
    if fb.kind == "categorical":
        entry["top_shift"] = _top_shift(fb, base, current, w)
    entry["missing_share"] = rounded(missing / rows if rows else 0.0)
    entry["baseline_missing_share"] = rounded(fb.missing_share)
    entry["histogram"] = {
        "bins": _bin_labels(fb),
        "baseline": [int(v) for v in base],
        "current": [int(v) for v in current],
    }
    if fb.critical:
        entry["critical"] = True
    return entry, feature_anomalies(fb, rows, present, same_type, other_types, types, w)


def _bin_labels(fb: FeatureBaseline) -> list[str]:
    """Names of the bins the score compared, in the order of the counts."""
    if fb.kind == "numeric":
        edges = list(fb.edges)
        ranges = [f"{_short(lo)}..{_short(hi)}" for lo, hi in itertools.pairwise(edges)]
        ranges = ranges[: len(fb.counts)] + [""] * (len(fb.counts) - len(ranges))
        return [*ranges, "below range", "above range", "missing", "invalid"]
    return [*(str(v) for v in fb.values), "<other>", "<unseen>", "<missing>", "<invalid>"]


def _short(value: float) -> str:
    return f"{value:.4g}"


def _centers(fb: FeatureBaseline, w: NumericWindow) -> np.ndarray:
    if len(fb.edges) < 2:  # a baseline with no finite value: only the out-of-range bins
        return np.zeros(2)
    edges = np.asarray(fb.edges, dtype=float)
    mids = (edges[:-1] + edges[1:]) / 2.0
    if len(mids) >= 3:
        # the outer bins reach to the extremes, whose midpoints lie far out in the tails: place
        # them half a neighbouring width beyond their inner edge, nearer where their mass lies
        mids[0] = max(mids[0], edges[1] - (edges[2] - edges[1]) / 2.0)
        mids[-1] = min(mids[-1], edges[-2] + (edges[-2] - edges[-3]) / 2.0)
    below = w.below_mean if w.below_mean is not None and math.isfinite(w.below_mean) else edges[0]
    above = w.above_mean if w.above_mean is not None and math.isfinite(w.above_mean) else edges[-1]
    return np.asarray([*mids, below, above])


def _top_shift(
    fb: FeatureBaseline, base: np.ndarray, current: np.ndarray, w: CategoricalWindow
) -> dict[str, Any] | None:
    if not base.sum() or not current.sum():
        return None
    p, q = base / base.sum(), current / current.sum()
    i = int(np.argmax(np.abs(q - p)))
    labels = [*fb.values, "<other>", "<unseen>", "<missing>", "<invalid>"]
    value = labels[i]
    if value in ("<other>", "<unseen>") and len(w.examples) == 1:
        value = w.examples[0][0]
    return {"value": value, "baseline_share": rounded(p[i]), "current_share": rounded(q[i])}
