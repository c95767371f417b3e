"""Feature profiles from aggregates: bin edges, categorical domains, the baseline document.

Both sources of a baseline (a file, the log store) compute the same aggregates in SQL; this module
turns them into :class:`FeatureBaseline` profiles and a document that fits its size limit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import orjson

from ..errors import MonitorError
from .file import FORMAT, FeatureBaseline

__all__ = [
    "LOW_CARDINALITY",
    "MAX_CATEGORY_LENGTH",
    "MAX_SIZE",
    "QUANTILE_SAMPLE",
    "TOP_VALUES",
    "baseline_document",
    "bin_edges",
    "categorical_profile",
    "classification_quality",
    "fit_size",
    "round_stat",
]

MAX_SIZE = 1_000_000
"""Bytes a baseline file may take (a Kubernetes ConfigMap holds 1 MiB); categorical domains
past the 50 most frequent values shrink first."""

MAX_CATEGORY_LENGTH = 256
"""Longer strings are never listed in a domain; their rows count in the ``other`` mass."""

TOP_VALUES = 50
"""Values listed in a categorical domain; the rest count in ``other``."""

QUANTILE_SAMPLE = 8192
"""Bin edges are quantiles of a reservoir sample this large (bin counts are exact): a t-digest
over every value costs three times as much for edges no more useful."""

LOW_CARDINALITY = 20
"""Number columns with at most this many distinct values are categorical."""


def categorical_profile(
    name: str,
    dtype: str,
    missing: int,
    present: int,
    counted: list[tuple[str, int]],
    invalid: int = 0,
) -> FeatureBaseline:
    """A categorical feature from its (key, count) pairs: the most frequent listed, the rest
    in ``other``. ``present`` counts every value, ``invalid`` those of another type."""
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


def bin_edges(minimum: float | None, maximum: float | None, quantiles: list[float]) -> list[float]:
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


def round_stat(value: float | None) -> float | None:
    """A mean or standard deviation to 7 significant digits (None and non-finite kept)."""
    return value if value is None or not math.isfinite(value) else float(f"{value:.7g}")


def baseline_document(
    rows: int,
    bins: int,
    order: list[str],
    summaries: dict[str, FeatureBaseline],
    keep: dict[str, str | None],
    quality: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The baseline document of ``summaries``: input features in ``order``, with the columns
    named in ``keep`` (``label``, ``prediction``) moved to their own sections."""
    label, prediction = keep.get("label"), keep.get("prediction")
    special = {label, prediction}
    doc: dict[str, Any] = {"format": FORMAT, "created_at": _now(), "rows": rows, "bins": bins}
    doc["columns"] = [n for n in order if n not in special]
    doc["features"] = {n: summaries[n].to_json() for n in doc["columns"]}
    doc["predictions"] = {}
    if prediction is not None:
        # kept under the name the user gave; the checks find the served output that is it
        doc["predictions"][prediction] = summaries[prediction].to_json() | {"column": prediction}
    doc["label"] = summaries[label].to_json() | {"column": label} if label else None
    doc["quality"] = quality
    return doc


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def fit_size(doc: dict[str, Any], limit: int) -> None:
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
