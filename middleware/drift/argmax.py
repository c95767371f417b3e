"""Prediction drift of a probability vector's most likely class.

When the served prediction is a vector of class probabilities (``predict_proba[0]`` …) and the
baseline holds the classes, each window row's most likely slot is counted as a class: slot ``i``
is class ``i`` when the baseline's classes are the slot numbers, else the ``i``-th of the
baseline's classes in scikit-learn's order (sorted; numerically when they are numbers), which
needs exactly as many classes as slots.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np

from ..baseline.file import FeatureBaseline
from ..baseline.window import CategoricalWindow
from ..evaluation.class_codes import sorted_classes

__all__ = ["argmax_window", "slot_classes"]

_TOP = """
    WITH cell AS (
        SELECT request_id, row_index, list_position($names::VARCHAR[], name) - 1 AS slot, num
        FROM features f
        WHERE f.ts >= $start AND f.ts < $end AND f.role = 'output' AND f.type = 'number'
          AND isfinite(f.num) AND f.name IN (SELECT unnest($names::VARCHAR[]))),
    best AS (SELECT arg_max(slot, num) AS slot FROM cell GROUP BY request_id, row_index)
    SELECT slot, count(*) FROM best GROUP BY slot
"""


def slot_classes(expected: FeatureBaseline, slots: int) -> tuple[list[str] | None, str]:
    """The baseline class of each of ``slots`` probability slots, and how they were matched
    (or, with None, why they could not be)."""
    if expected.kind != "categorical":
        return None, "the baseline's prediction is numeric, not classes"
    values = set(expected.values)
    numbered = [str(i) for i in range(slots)]
    if values and values <= set(numbered):
        return numbered, "slot i is class i"
    if expected.complete and len(values) == slots:
        return sorted_classes(values), "slot i is the baseline's i-th class in sorted order"
    return None, f"{slots} probabilities per row but {len(values)} classes in the baseline"


def argmax_window(
    cursor: Any,
    names: list[str],
    classes: list[str],
    expected: FeatureBaseline,
    start: datetime,
    end: datetime,
) -> CategoricalWindow:
    """The window's most likely classes (of the vector fields ``names``) by baseline class."""
    found = cursor.execute(_TOP, {"names": names, "start": start, "end": end}).fetchall()
    index = {key: i for i, key in enumerate(expected.values)}
    window = CategoricalWindow(np.zeros(len(expected.values)))
    outside = []
    for slot, count in found:
        key = classes[int(slot)]
        if key in index:
            window.counts[index[key]] += count
        else:
            window.outside += int(count)
            outside.append((key, int(count)))
    window.outside_distinct = len(outside)
    window.examples = sorted(outside, key=lambda item: -item[1])[:3]
    return window
