"""Feature-attribution drift and feature importances.

When responses carry per-feature attributions (SHAP values and the like, in the output field
that the ``attributions_field`` setting names) and the baseline holds the training attributions,
each feature's attributions in the window are compared with the baseline's: their distribution
with the feature's own drift method, and their mean absolute value, as Vertex AI does. A model
that leans on a feature in another way shows here even when the feature's values have not moved.

Feature importances (the baseline's ``importances``, given or the training attributions' mean
absolute values) rank drifted features, so that a report and an alert say which drift matters.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from ..baseline.file import Baseline
from ..baseline.window import numeric_counts
from .features import evaluate_feature

__all__ = ["attribution_section", "rank"]


def attribution_section(
    cursor: Any,
    baseline: Baseline,
    field: str,
    start: datetime,
    end: datetime,
    min_rows: int,
) -> dict[str, Any]:
    """The /drift report's ``attributions`` section for the window [start, end).

    A feature's attributions are stored as ``field.name`` (an object keyed by feature) or as
    ``field[i]`` (a list, or an output tensor, in the baseline's column order): whichever the
    window holds more of is read."""
    stored = _stored_names(cursor, baseline, field, start, end)
    summaries = [replace(fb, name=n) for n in stored for fb in [baseline.attributions[stored[n]]]]
    windows = numeric_counts(cursor, "output", summaries, start, end)
    found = cursor.execute(
        "SELECT name, count(*), avg(abs(num)) FROM features WHERE role = 'output' "
        "AND type = 'number' AND isfinite(num) AND ts >= ? AND ts < ? AND name = ANY(?) "
        "GROUP BY name",
        [start, end, list(stored)],
    ).fetchall()
    means = {stored[name]: (int(n), float(mean)) for name, n, mean in found}
    features: dict[str, Any] = {}
    for summary in summaries:
        name = stored[summary.name]
        rows, mean = means.get(name, (0, None))
        entry: dict[str, Any] = {"rows": rows, "mean_abs": mean}
        entry["baseline_mean_abs"] = baseline.attribution_means.get(name)
        if rows >= min_rows:
            window = windows.get(summary.name)
            verdict, _ = evaluate_feature(summary, rows, {"number": rows}, window)
            entry |= {k: verdict[k] for k in ("method", "score", "threshold", "drifted")}
        else:
            entry["drifted"] = False
        features[name] = entry
    drifted = rank([n for n, e in features.items() if e["drifted"]], baseline)
    checked = any(e["rows"] >= min_rows for e in features.values())
    return {
        "field": field,
        "status": ("alert" if drifted else "ok") if checked else "insufficient_data",
        "drifted_features": drifted,
        "features": features,
    }


def _stored_names(
    cursor: Any, baseline: Baseline, field: str, start: datetime, end: datetime
) -> dict[str, str]:
    """The stored output name of each attributed feature in the window, to the feature."""
    order = baseline.columns or tuple(baseline.features)
    position = {name: i for i, name in enumerate(order)}
    forms = {name: [f"{field}.{name}"] for name in baseline.attributions}
    for name in forms:
        if name in position:
            forms[name].append(f"{field}[{position[name]}]")
    counted = dict(
        cursor.execute(
            "SELECT name, count(*) FROM features WHERE role = 'output' AND ts >= ? AND ts < ? "
            "AND name = ANY(?) GROUP BY name",
            [start, end, [form for names in forms.values() for form in names]],
        ).fetchall()
    )
    return {max(names, key=lambda n: counted.get(n, 0)): name for name, names in forms.items()}


def rank(names: list[str], baseline: Baseline) -> list[str]:
    """``names`` by descending importance when the baseline has importances, else as given."""
    importances = baseline.importances or baseline.attribution_means
    if not importances:
        return names
    return sorted(names, key=lambda n: -importances.get(n, -1.0))
